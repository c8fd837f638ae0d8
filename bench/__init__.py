"""Side-by-side benchmarks of the API and the pipeline against their floors and baselines.

Run by ``make bench`` (``python -m bench``), never by ``make test``; see ``bench/README.md``.
"""
