"""``python -m bench [NAME ...] [--quick] [--reps N]``: run benchmarks, print, record.

With no name every benchmark runs (``make bench``). Each one prints its table, writes
``bench/results/<name>.json``, and ``bench/RESULTS.md`` is rewritten from all result files.
``--quick`` uses small sizes and short runs to check that everything works; its results go to
``bench/.work/quick-results`` so they never replace a full run's.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from bench import harness
from bench.harness import Result


@dataclass(frozen=True)
class Plan:
    """Sizes and repetitions of one invocation."""

    quick: bool
    reps: int

    @property
    def symbols(self) -> int:
        return 50 if self.quick else 1000

    @property
    def seconds(self) -> float:
        """Length of one load-generator run."""
        return 3.0 if self.quick else 8.0


def _api_hit(plan: Plan) -> Result:
    from bench import api

    return api.cache_hits(plan.symbols, plan.reps, plan.seconds)


def _api_miss(plan: Plan) -> Result:
    from bench import api

    return api.cache_misses(plan.symbols, plan.reps, plan.seconds)


def _api_memory(plan: Plan) -> Result:
    from bench import api

    return api.memory(plan.symbols, 10_000 if plan.quick else 100_000)


def _pipeline_load(plan: Plan) -> Result:
    from bench import pipeline
    from bench.datagen import DataSet

    return pipeline.transform_load(DataSet(plan.symbols), plan.reps, min(plan.reps, 2))


def _pipeline_increment(plan: Plan) -> Result:
    from bench import pipeline
    from bench.datagen import DataSet

    return pipeline.daily_increment(DataSet(plan.symbols), plan.reps)


def _orchestration(plan: Plan) -> Result:
    from bench import orchestration

    return orchestration.backfill(plan.symbols, min(plan.reps, 2))


def _lake_api(plan: Plan) -> Result:
    from bench import lake

    return lake.lake_api(plan.symbols, plan.reps, plan.seconds)


def _celery_backfill(plan: Plan) -> Result:
    from bench import celery_backfill

    return celery_backfill.celery_backfill(plan.symbols, min(plan.reps, 2))


def _stream(plan: Plan) -> Result:
    from bench import stream

    return stream.push_stream(plan.symbols, plan.reps, plan.quick)


def _bulk(plan: Plan) -> Result:
    from bench import bulk

    return bulk.bulk_bars(plan.symbols, plan.reps, plan.seconds)


def _serving(plan: Plan) -> Result:
    from bench import serving

    return serving.serving(plan.symbols, plan.reps, plan.seconds)


def _universe(plan: Plan) -> Result:
    from bench import universe

    symbols = plan.symbols * 10
    sizes = (plan.symbols,) if plan.quick else (plan.symbols, symbols)
    return universe.universe(symbols, min(plan.reps, 2), sizes)


BENCHMARKS: dict[str, Callable[[Plan], Result]] = {
    "api-hit": _api_hit,
    "api-miss": _api_miss,
    "api-memory": _api_memory,
    "pipeline-load": _pipeline_load,
    "pipeline-increment": _pipeline_increment,
    "orchestration": _orchestration,
    "lake-api": _lake_api,
    "stream": _stream,
    "celery-backfill": _celery_backfill,
    "bulk": _bulk,
    "universe": _universe,
    "serving": _serving,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, short runs")
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 3, quick 2)")
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    plan = Plan(quick=args.quick, reps=args.reps or (2 if args.quick else 3))
    if plan.quick:
        harness.RESULTS_DIR = harness.WORK_DIR / "quick-results"
    from bench import machine, report

    facts = machine.describe()
    failed = []
    for name in args.names or list(BENCHMARKS):
        print(f"\n== {name} ({'quick' if plan.quick else 'full'}, {plan.reps} reps)", flush=True)
        started = time.perf_counter()
        load_before = os.getloadavg()[0]
        try:
            result = BENCHMARKS[name](plan)
        except Exception as exc:  # report, go on with the next benchmark
            print(f"{name}: FAILED: {exc!r}", file=sys.stderr, flush=True)
            failed.append(name)
            continue
        result.started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        result.seconds = time.perf_counter() - started
        result.machine = facts
        result.params["load_average_1m"] = (
            f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after"
        )
        result.judge()
        print(harness.table(result))
        print("\n".join(harness.goal_lines(result)), flush=True)
        path = harness.save(result)
        print(f"-> {path}")
    if not plan.quick:
        report.write()
        print(f"\n-> {harness.BENCH_DIR / 'RESULTS.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
