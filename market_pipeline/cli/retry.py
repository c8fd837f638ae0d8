"""``python -m market_pipeline.cli.retry``: load again only the symbols whose latest attempt failed.

Re-executing a failed run from the UI re-runs its single step, that is every symbol of its range
(a thousand API calls to retry three). Selecting the failed partitions in the UI is right, but a
run covers one contiguous range of symbols, so scattered failures become one run, one process,
per gap. This command finds the failed symbols with one status query per asset (and, for a
range planned with one event per asset whose process died, the symbols it never materialized)
and loads them through ``make ingest``'s program: as few runs as the registered order allows,
all in this one process, each visible in the UI. The daily update also retries them first,
since a symbol that failed is among the stalest.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Iterable

from dagster import (
    AssetKey,
    AssetPartitionStatus,
    AssetRecordsFilter,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    RunsFilter,
)

from market_core.assets import ACTIONS, RAW_ACTIONS
from market_core.home import DataHome
from market_pipeline.actions.fetch import last_actions_fetch
from market_pipeline.actions.policy import actions_due
from market_pipeline.cli import ingest
from market_pipeline.cli.instance import open_instance
from market_pipeline.defs.automation import INGEST_JOB
from market_pipeline.defs.daily import symbol_pipeline
from market_pipeline.defs.partitions import PARTITIONS, symbols_partitions


def failed_symbols(instance: DagsterInstance) -> list[str]:
    """Registered symbols whose latest attempt failed at any stage, in registered order.

    A symbol whose corporate actions were not due was skipped, but in a run that failed (for
    another symbol) Dagster counts its planned actions partitions as failed too: for those two
    assets only a symbol whose actions are still due counts (never fetched, or a week old)."""
    registered = instance.get_dynamic_partitions(PARTITIONS)
    home, now = DataHome.from_env(), dt.datetime.now(dt.UTC)
    failed: set[str] = set()
    unfinished = unfinished_in_failed_runs(instance, symbol_pipeline.keys)
    for asset in symbol_pipeline.keys:
        status = instance.get_status_by_partition(asset, registered, symbols_partitions)
        failing = {s for s, st in (status or {}).items() if st == AssetPartitionStatus.FAILED}
        failing |= unfinished.get(asset, set()) & set(registered)
        if asset.to_user_string() in (RAW_ACTIONS, ACTIONS):
            failing = {s for s in failing if actions_due(s, last_actions_fetch(home, s), now)}
        failed.update(failing)
    return [s for s in registered if s in failed]


FAILED_RUNS_LOOKED_AT = 100
PLANS_LOOKED_AT = 1000


def unfinished_in_failed_runs(
    instance: DagsterInstance, assets: Iterable[AssetKey]
) -> dict[AssetKey, set[str]]:
    """Per asset, the symbols a recent failed run planned as one range (one event per asset,
    ``defs/planned.py``) with no materialization since that plan: a run whose process died
    never marked them failed itself."""
    runs = instance.get_runs(
        RunsFilter(job_name=INGEST_JOB, statuses=[DagsterRunStatus.FAILURE]),
        limit=FAILED_RUNS_LOOKED_AT,
    )
    failed_runs = {run.run_id for run in runs}
    unfinished: dict[AssetKey, set[str]] = {}
    for asset in assets if failed_runs else ():
        plans = instance.fetch_planned_materializations(
            AssetRecordsFilter(asset_key=asset), limit=PLANS_LOOKED_AT
        ).records
        latest = instance.event_log_storage.get_latest_storage_id_by_partition(
            asset, DagsterEventType.ASSET_MATERIALIZATION
        )
        for plan in plans:
            data = plan.event_log_entry.dagster_event
            subset = getattr(data and data.event_specific_data, "partitions_subset", None)
            if plan.run_id not in failed_runs or subset is None:
                continue
            unfinished.setdefault(asset, set()).update(
                key for key in subset.get_partition_keys() if latest.get(key, -1) < plan.storage_id
            )
    return unfinished


def main() -> int:
    with open_instance() as instance:
        failed = failed_symbols(instance)
    if not failed:
        print("retry: no symbol's latest attempt failed; nothing to do", file=sys.stderr)
        return 0
    print(f"retry: {len(failed)} failed symbols: {', '.join(failed)}")
    return ingest.main(symbols=failed)


if __name__ == "__main__":
    raise SystemExit(main())
