"""Writes the Dagster instance config of a data home (``$DAGSTER_HOME/dagster.yaml``).

Run by ``make`` before anything starts Dagster. The instance keeps its runs, event log, schedule
and sensor state and compute logs under the data home, lets at most four runs proceed at once,
and gives the ``alpha_vantage`` pool (every step that calls the API or writes DuckDB) one slot at
run granularity: a second backfill, the daily update or a sensor's run waits in the queue instead
of fighting over the key's quota or the DuckDB file. An existing file is left alone, so users can
edit it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from dagster import DagsterInstance
from dagster._core.instance.ref import InstanceRef

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


def dagster_home() -> Path:
    explicit = os.environ.get("DAGSTER_HOME")
    return Path(explicit) if explicit else DataHome.from_env().dagster_home


def ensure_instance(home: Path) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(DAGSTER_YAML)
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


def open_instance() -> DagsterInstance:
    """The data home's instance, whether or not ``DAGSTER_HOME`` is set."""
    home = dagster_home().resolve()
    ensure_instance(home)
    instance = DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))
    ensure_pool_limit(instance)
    return instance


def main() -> int:
    with open_instance() as instance:
        print(f"Dagster instance: {instance.root_directory}/dagster.yaml", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
