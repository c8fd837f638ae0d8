"""The backfill's work without Dagster: ``python -m bench.direct_backfill`` (benchmark 6).

The code location's own resources (resolved as a run resolves them), the same ``BatchRunner``
over every stage (bars and corporate actions) for ``MARKET_SYMBOLS``, in one plain process:
what is left when the orchestration is taken away. Exits 1 if any symbol failed.
"""

from __future__ import annotations

import sys

from dagster import build_resources

from market_pipeline.bars.rules import Rules
from market_pipeline.defs.resources import resources_from_env
from market_pipeline.runs.batch import ALL_STAGES, BatchRunner, BatchSettings


def main() -> int:
    with build_resources(resources_from_env()) as resources:
        source, duckdb = resources.alpha_vantage, resources.duckdb
        runner = BatchRunner(
            home=duckdb.home,
            client=source.client(),
            duckdb=duckdb.store(),
            stages=ALL_STAGES,
            settings=BatchSettings(outputsize=source.outputsize, rules=Rules()),
            log=lambda _: None,
        )
        outcome = runner.run(resources.watchlist.wanted())
    if outcome.failures:
        print(f"{len(outcome.failures)} symbols failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
