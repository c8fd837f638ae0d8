"""``python -m market_pipeline.retry``: load again only the symbols whose latest attempt failed.

Re-executing a failed run from the UI re-runs its single step, that is every symbol of its range
(a thousand API calls to retry three). Selecting the failed partitions in the UI is right, but a
run covers one contiguous range of symbols, so scattered failures become one run, one process,
per gap. This command finds the failed symbols with one status query per asset and loads them
through ``make ingest``'s program: as few runs as the registered order allows, all in this one
process, each visible in the UI. The daily update also retries them first, since a symbol that
failed is among the stalest.
"""

from __future__ import annotations

import sys

from dagster import AssetPartitionStatus, DagsterInstance

from market_pipeline import ingest
from market_pipeline.assets import symbol_pipeline
from market_pipeline.instance import open_instance
from market_pipeline.partitions import PARTITIONS, symbols_partitions


def failed_symbols(instance: DagsterInstance) -> list[str]:
    """Registered symbols whose latest attempt failed at any stage, in registered order."""
    registered = instance.get_dynamic_partitions(PARTITIONS)
    failed: set[str] = set()
    for asset in symbol_pipeline.keys:
        status = instance.get_status_by_partition(asset, registered, symbols_partitions)
        failed.update(s for s, st in (status or {}).items() if st == AssetPartitionStatus.FAILED)
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
