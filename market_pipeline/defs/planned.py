"""A run over a range of symbols plans its assets with one event each, not one per symbol.

Dagster writes a "materialization planned" event per asset and partition when it creates a run
(5,000 SQLite writes before a 1000-symbol backfill starts), unless
``DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS`` is set in the process that creates the run:
then one event per asset covers the range. But the per-partition events are what marks a
partition failed when its run fails, so the op plans each failed symbol's unreached stages
itself before it raises: the UI and ``make retry-failed`` see exactly the symbols that failed.
docs/design/runs-and-assets.md has the figures.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from dagster import AssetExecutionContext, DagsterEvent
from dagster._core.events import AssetMaterializationPlannedData

from market_pipeline.defs.outcomes import failure
from market_pipeline.runs.outcome import BatchOutcome

PLANNED_SUBSET_VAR = "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"


@contextmanager
def one_planned_event_per_asset() -> Iterator[None]:
    """Runs created inside plan each asset with one event (unless the variable is set to
    something else already); the variable is restored after."""
    before = os.environ.get(PLANNED_SUBSET_VAR)
    if before is None:
        os.environ[PLANNED_SUBSET_VAR] = "true"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(PLANNED_SUBSET_VAR, None)


def plan_failed_partitions(context: AssetExecutionContext, outcome: BatchOutcome) -> int:
    """A planned event for each failed symbol and selected stage it did not reach, so the
    run's failure marks just those partitions failed; the number of events written."""
    written = 0
    for key in sorted(context.selected_asset_keys):
        reached = outcome.materialized.get(key.to_user_string(), {})
        for symbol in sorted(outcome.failures):
            if symbol in reached:
                continue
            event = DagsterEvent.build_asset_materialization_planned_event(
                context.job_name,
                str(context.op_handle),
                AssetMaterializationPlannedData(key, partition=symbol),
            )
            context.instance.report_dagster_event(event, context.run_id)
            written += 1
    return written


def fail_if_any(context: AssetExecutionContext, outcome: BatchOutcome) -> None:
    """The step fails, naming its failed symbols, once their unreached stages are planned."""
    if outcome.failures:
        plan_failed_partitions(context, outcome)
        raise failure(outcome)
