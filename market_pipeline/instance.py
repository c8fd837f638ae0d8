"""Writes the Dagster instance config of a data home (``$DAGSTER_HOME/dagster.yaml``).

Run by ``make`` before anything starts Dagster. The instance keeps its runs, event log, schedule
and sensor state and compute logs under the data home, lets at most four runs proceed at once,
and gives the ``alpha_vantage`` pool (every step that calls the API or writes DuckDB) one slot at
run granularity: a second backfill, the daily update or a sensor's run waits in the queue instead
of fighting over the key's quota or the DuckDB file. An existing file is left alone, so users can
edit it.

Dagster creates (and migrates) its SQLite storage when an instance is first opened, without any
guard against a second process doing the same at the same moment: one of two ``make ingest``
started together on a fresh data home died on ``table ... already exists``. Every opening here
therefore holds a file lock beside ``dagster.yaml``, so the first process creates the storage and
the others open what it made. ``make run`` and ``make dagster`` open the instance this way before
``dagster dev`` starts, so its webserver, daemon and code servers only ever find it made.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dagster import DagsterInstance
from filelock import FileLock, Timeout

from market_core.atomic import write_text_atomic
from market_core.home import DataHome
from market_pipeline.assets import ALPHA_VANTAGE_POOL

DAGSTER_YAML = """\
# Written by market_pipeline/instance.py on first use; edit freely, it is not overwritten.
concurrency:
  runs:
    max_concurrent_runs: 4
  pools:
    default_limit: 1
    granularity: run
run_monitoring:
  enabled: true
  max_resume_run_attempts: 0
telemetry:
  enabled: false
"""
LOCK_NAME = "dagster.yaml.lock"
LOCK_TIMEOUT_SECONDS = 120.0


class InstanceBusyError(TimeoutError):
    """Another process kept the instance's lock for longer than a creation or migration takes."""


def dagster_home() -> Path:
    explicit = os.environ.get("DAGSTER_HOME")
    return Path(explicit) if explicit else DataHome.from_env().dagster_home


def ensure_instance(home: Path) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        write_text_atomic(config, DAGSTER_YAML)
    return config


def ensure_pool_limit(instance: DagsterInstance) -> None:
    """Create the pool's limit (``default_limit``) now instead of at its first dequeue.

    The run queue only learns of a pool's limit in the pass after it first saw the pool, so on a
    fresh instance every run queued before that first pass would start at once. A limit already
    stored (perhaps set in the UI) is left alone.
    """
    storage = instance.event_log_storage
    if ALPHA_VANTAGE_POOL not in storage.get_concurrency_keys():
        storage.initialize_concurrency_limit_to_default(ALPHA_VANTAGE_POOL)


@contextmanager
def instance_lock(home: Path, timeout: float = LOCK_TIMEOUT_SECONDS) -> Iterator[None]:
    """Held while an instance is opened or symbols are registered: one process at a time.

    Creating, migrating and seeding the storage, and adding partitions (a read, then an insert)
    are each one process's job.

    The lock is an ``flock`` on a file beside ``dagster.yaml``: the kernel releases it when its
    holder dies, so a killed process never leaves the data home locked.
    """
    home.mkdir(parents=True, exist_ok=True)
    lock = FileLock(home / LOCK_NAME)
    try:
        lock.acquire(timeout=timeout)
    except Timeout as exc:
        raise InstanceBusyError(
            f"another process has been creating or migrating the Dagster instance in {home} for "
            f"more than {timeout:.0f} s (it holds {home / LOCK_NAME}); let it finish or stop it, "
            "then try again"
        ) from exc
    try:
        yield
    finally:
        lock.release()


@contextmanager
def _dagster_home_env(home: Path) -> Iterator[None]:
    """``DagsterInstance.get()``, Dagster's public way in, reads the folder from the environment."""
    before = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(home)
    try:
        yield
    finally:
        if before is None:
            del os.environ["DAGSTER_HOME"]
        else:
            os.environ["DAGSTER_HOME"] = before


def open_instance(lock_timeout: float = LOCK_TIMEOUT_SECONDS) -> DagsterInstance:
    """The data home's instance, whether or not ``DAGSTER_HOME`` is set; safe to race."""
    home = dagster_home().resolve()
    with instance_lock(home, lock_timeout):
        ensure_instance(home)
        with _dagster_home_env(home):
            instance = DagsterInstance.get()
        try:
            ensure_pool_limit(instance)
        except BaseException:
            instance.dispose()
            raise
    return instance


def main() -> int:
    with open_instance() as instance:
        print(f"Dagster instance: {instance.root_directory}/dagster.yaml", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
