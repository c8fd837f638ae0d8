"""``python -m market_pipeline.cli.retry``: load again only the symbols whose latest attempt failed.

Re-executing a failed run from the UI re-runs its single step, that is every symbol of its range
(a thousand API calls to retry three). Selecting the failed partitions in the UI is right, but a
run covers one contiguous range of symbols, so scattered failures become one run, one process,
per gap. This command finds the failed symbols with one status query per asset and loads them
through ``make ingest``'s program: as few runs as the registered order allows, all in this one
process, each visible in the UI. The daily update also retries them first, since a symbol that
failed is among the stalest.
"""

from __future__ import annotations

import datetime as dt
import sys

from dagster import AssetPartitionStatus, DagsterInstance

from market_core.assets import ACTIONS, RAW_ACTIONS
from market_core.home import DataHome
from market_pipeline.actions.fetch import last_actions_fetch
from market_pipeline.actions.policy import actions_due
from market_pipeline.cli import ingest
from market_pipeline.cli.instance import open_instance
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
    for asset in symbol_pipeline.keys:
        status = instance.get_status_by_partition(asset, registered, symbols_partitions)
        failing = {s for s, st in (status or {}).items() if st == AssetPartitionStatus.FAILED}
        if asset.to_user_string() in (RAW_ACTIONS, ACTIONS):
            failing = {s for s in failing if actions_due(s, last_actions_fetch(home, s), now)}
        failed.update(failing)
    return [s for s in registered if s in failed]


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
