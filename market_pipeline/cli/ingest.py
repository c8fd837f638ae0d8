"""``make ingest``: register the watchlist (and, with ``MARKET_UNIVERSE`` set, the listings it
selects) and materialize the graph, headless.

Runs the location's ``ingest_job`` on the data home's instance, so runs and checks show in the
UI afterwards. Dynamic partitions run as contiguous ranges, so the wanted symbols become as few
ranges as the registered order allows; with Celery workers each range is split across them, a
child process per run. Exits 1 if any symbol failed, 2 on a configuration error.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from dagster import (
    DagsterInstance,
    Definitions,
    ExecuteInProcessResult,
    JobDefinition,
    JobExecutionResult,
    RunsFilter,
    build_reconstructable_job,
    build_resources,
    execute_job,
)
from sqlalchemy.exc import SQLAlchemyError

from market_core.symbols import InvalidSymbolError
from market_pipeline.cli.instance import instance_lock, open_instance
from market_pipeline.definitions import defs
from market_pipeline.defs.automation import INGEST_JOB, complete_histories, followed
from market_pipeline.defs.executor import celery_workers, executor_from_env
from market_pipeline.defs.partitions import (
    PARTITIONS,
    WatchlistResource,
    contiguous_blocks,
    range_tags,
    split_block,
)
from market_pipeline.defs.planned import one_planned_event_per_asset
from market_pipeline.defs.resources import AlphaVantageResource, MarketDuckDB
from market_pipeline.defs.settings import configuration_problems

RANGE_FLAG = "--range"
LAUNCH_TAG = "market/launch"
RUN_END_WAIT_SECONDS = 300.0
"""How long a run whose end could not be recorded waits for the instance's database."""


class ConfigurationError(Exception):
    """The environment (or a watchlist) holds something the pipeline cannot use."""


def _location() -> Definitions:
    """The code location as Dagster loads it; a bad value stops us here, before a run."""
    try:
        return defs()
    except Exception as exc:
        raise _configuration_error(exc) from None


@contextmanager
def _resolved(
    location: Definitions,
) -> Iterator[tuple[AlphaVantageResource, MarketDuckDB, WatchlistResource]]:
    """The location's own resources, resolved here so a bad value stops us before a run."""
    try:
        with build_resources(location.resources or {}) as resolved:
            yield resolved.alpha_vantage, resolved.duckdb, resolved.watchlist
    except Exception as exc:
        raise _configuration_error(exc) from None


def _configuration_error(exc: Exception) -> Exception:
    """``exc`` as the variables it names, or itself if it is not about the configuration."""
    problems = configuration_problems(exc)
    return exc if problems is None else ConfigurationError("; ".join(problems))


def _followed(watchlist: WatchlistResource, duckdb: MarketDuckDB) -> list[str]:
    """The watchlist, then the symbols ``MARKET_UNIVERSE`` selects from the loaded listing, as
    the watchlist sensor follows them; a delisted symbol whose history is complete is left out
    (it is never fetched again). Without a universe, the watchlist alone, as before."""
    if watchlist.selection() is None:
        return watchlist.wanted()
    follow = followed(watchlist, duckdb)
    if follow.listing is None:
        print(
            f"ingest: {follow.partial}: the watchlist alone; the listings asset loads it "
            "(the listings_refresh sensor runs it under `make run`)",
            file=sys.stderr,
        )
        return follow.symbols
    complete = set(complete_histories(duckdb.home, follow.listings_of(follow.symbols)))
    symbols = [s for s in follow.symbols if s not in complete]
    print(
        f"ingest: {follow.describe()}: {len(symbols)} symbols"
        + (f" ({len(complete)} delisted ones complete, not fetched again)" if complete else ""),
        flush=True,
    )
    return symbols


def register(instance: DagsterInstance, symbols: Sequence[str]) -> list[str]:
    """Under the instance's lock: Dagster reads the registered keys, then inserts the others, so
    two ingests adding the same new symbol at once would both insert it and one would fail."""
    with instance_lock(Path(instance.root_directory)):
        known = set(instance.get_dynamic_partitions(PARTITIONS))
        new = [s for s in symbols if s not in known]
        if new:
            instance.add_dynamic_partitions(PARTITIONS, new)
    return new


def _worker_places() -> int | str:
    """How many steps the Celery workers run at once, or why the steps would wait forever in
    the broker's queue."""
    from kombu.exceptions import OperationalError as KombuError  # Celery's mode only

    try:
        workers = celery_workers()
    except KombuError as exc:
        return f"the Celery broker (MARKET_CELERY_BROKER_URL) cannot be reached: {exc}"
    if workers:
        return sum(workers.values())
    return (
        "no Celery worker answers on MARKET_CELERY_BROKER_URL, so the run's steps would wait "
        "in its queue; start one with `make worker` (on any machine sharing the three variables)"
    )


@contextmanager
def _executed(
    job: JobDefinition, instance: DagsterInstance, tags: dict[str, str]
) -> Iterator[ExecuteInProcessResult | JobExecutionResult]:
    """One run of ``job``: in this process, or with a Celery broker set through the job's own
    executor, so that its steps run on the workers (they rebuild the job from its module)."""
    if executor_from_env() is None:
        yield job.execute_in_process(instance=instance, tags=tags, raise_on_error=False)
        return
    rebuilt = build_reconstructable_job("market_pipeline.definitions", "resolved_ingest_job")
    launch = uuid.uuid4().hex
    try:
        with execute_job(
            rebuilt, instance=instance, tags={**tags, LAUNCH_TAG: launch}, raise_on_error=False
        ) as result:
            yield result
    finally:
        _ended(instance, launch)


def _ended(instance: DagsterInstance, launch: str) -> None:
    """The launch's run in a terminal state, whatever stopped it.

    When the instance's PostgreSQL goes away as a run fails, Dagster cannot record the failure
    and the run would show as started for ever; it is marked failed once the database answers
    (within ``RUN_END_WAIT_SECONDS``), so ``make retry-failed`` finds its symbols."""
    deadline = time.monotonic() + RUN_END_WAIT_SECONDS
    while True:
        try:
            for run in instance.get_runs(RunsFilter(tags={LAUNCH_TAG: launch})):
                if not run.is_finished:
                    instance.report_run_failed(
                        run, "the run stopped before it could record its end (see its log)"
                    )
                    print(f"ingest: run {run.run_id} marked failed: it could not record its end")
            return
        except SQLAlchemyError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(2.0)


def main(symbols: Sequence[str] | None = None) -> int:
    """Load ``symbols`` (registered or new; ``cli.retry`` passes the failed ones), or else the
    watchlist."""
    try:
        location = _location()
        with _resolved(location) as (alpha_vantage, duckdb, watchlist):
            wanted = list(symbols) if symbols is not None else _followed(watchlist, duckdb)
            source = "the bundled offline sample" if alpha_vantage.uses_sample else "Alpha Vantage"
            target = duckdb.database
    except (ConfigurationError, InvalidSymbolError, OSError) as exc:
        print(f"ingest: {exc}", file=sys.stderr)
        return 2
    if not wanted:
        print("ingest: the watchlist is empty", file=sys.stderr)
        return 2
    places = 1
    if executor_from_env() is not None:
        found = _worker_places()
        if isinstance(found, str):
            print(f"ingest: {found}", file=sys.stderr)
            return 2
        places = found
    print(f"ingest: {len(wanted)} symbols from {source} into {target}", flush=True)
    with open_instance() as instance:
        register(instance, wanted)
        blocks = contiguous_blocks(instance.get_dynamic_partitions(PARTITIONS), set(wanted))
        ranges = [part for block in blocks for part in split_block(block, places)]
        if places == 1:
            return 0 if all([_run_range(location, instance, b) for b in ranges]) else 1
    return _run_in_children(ranges)


def _run_range(location: Definitions, instance: DagsterInstance, block: Sequence[str]) -> bool:
    """One run over ``block``, reported as it ends."""
    job = location.resolve_job_def(INGEST_JOB)
    try:
        with one_planned_event_per_asset(), _executed(job, instance, range_tags(block)) as result:
            ok = result.success
            print(
                f"ingest: run {result.run_id} for {block[0]}..{block[-1]} "
                f"({len(block)} symbols): {'ok' if ok else 'FAILED'}",
                flush=True,
            )
            for event in result.all_events:
                error = event.step_failure_data.error if event.is_step_failure else None
                if error is not None:
                    print(f"ingest: {error.message.strip()}", flush=True)
    except SQLAlchemyError as exc:  # the instance's database went away during the run
        print(
            f"ingest: the run for {block[0]}..{block[-1]} FAILED: the Dagster instance's "
            f"database failed ({type(exc).__name__}); `make retry-failed` loads what is missing",
            flush=True,
        )
        return False
    return ok


def _run_in_children(ranges: Sequence[Sequence[str]]) -> int:
    """Each range's run at the same time, each launched by a child process of its own
    (``--range FIRST LAST``): Dagster's run start reconfigures logging, which deadlocks two
    runs started from threads of one process. A child's output goes straight to ours."""
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "market_pipeline.cli.ingest", RANGE_FLAG, r[0], r[-1]]
        )
        for r in ranges
    ]
    codes = [child.wait() for child in children]
    return 1 if any(codes) else 0


def run_registered_range(first: str, last: str) -> int:
    """``--range FIRST LAST``: one run over that range of registered symbols, as a child of a
    split ingest (which checked the configuration and the workers, and registered them)."""
    with open_instance() as instance:
        registered = instance.get_dynamic_partitions(PARTITIONS)
        if first not in registered or last not in registered:
            print(f"ingest: {first}..{last} is not a registered range", file=sys.stderr)
            return 2
        block = registered[registered.index(first) : registered.index(last) + 1]
        return 0 if _run_range(_location(), instance, block) else 1


if __name__ == "__main__":
    if sys.argv[1:2] == [RANGE_FLAG] and len(sys.argv) == 4:
        raise SystemExit(run_registered_range(sys.argv[2], sys.argv[3]))
    raise SystemExit(main())
