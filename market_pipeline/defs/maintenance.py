"""The lake's daily upkeep: the ``lake_maintenance`` job and its schedule, in lake mode only.

Every load commits a snapshot with its own small Parquet files, and the old versions of
rewritten rows stay on disk for time travel (``?as_of=``). Left alone, reads slow down as files
pile up and the shared folder only grows. Once a day, in this order: write the rows of tiny
commits that DuckLake kept in the catalog (data inlining) to a file, merge adjacent small files,
expire the snapshots older than ``MARKET_LAKE_KEEP_DAYS`` (default 30: ``as_of`` answers that
far back), then delete the files that no remaining snapshot needs and that were let go of over a
day ago (a reader's query may still be scanning a file let go of just now), and the files a load
killed before its commit left behind (older than a day: a running load's are recent). Each step
is its own commit and, like a load, is retried when it meets a concurrent writer's commit.

In file mode (``MARKET_POSTGRES_URL`` unset) nothing here is defined: the DuckDB file needs no
such care.
"""

import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import duckdb
from dagster import (
    Config,
    DefaultScheduleStatus,
    JobDefinition,
    OpExecutionContext,
    Output,
    ScheduleDefinition,
    job,
    op,
)

from market_core.env import env_int
from market_core.exchange import EXCHANGE_TZ
from market_core.lake import (
    LAKE_ALIAS,
    LakeSettings,
    connect,
    snapshot_id,
    with_conflict_retry,
    write_lock,
)
from market_pipeline.defs.resources import MarketLake

KEEP_DAYS_VAR = "MARKET_LAKE_KEEP_DAYS"
DEFAULT_KEEP_DAYS = 30
JOB_NAME = "lake_maintenance"
# Overnight at the exchange, far from the 18:30 update, when no load competes for the tables.
MAINTENANCE_CRON = "0 3 * * *"

# CALL, not SELECT ... FROM: selected from (and with prepared parameters), the merge is not
# committed. The alias and the timestamp are ours, never user text.
FLUSH_SQL = f"CALL ducklake_flush_inlined_data('{LAKE_ALIAS}')"
MERGE_SQL = f"CALL ducklake_merge_adjacent_files('{LAKE_ALIAS}')"
EXPIRE_SQL = f"CALL ducklake_expire_snapshots('{LAKE_ALIAS}', older_than => TIMESTAMPTZ '{{}}')"
CLEANUP_SQL = f"CALL ducklake_cleanup_old_files('{LAKE_ALIAS}', older_than => TIMESTAMPTZ '{{}}')"
ORPHANS_SQL = (
    f"CALL ducklake_delete_orphaned_files('{LAKE_ALIAS}', older_than => TIMESTAMPTZ '{{}}')"
)
CLEANUP_GRACE = dt.timedelta(days=1)
"""How long a file no snapshot needs stays on disk: a query that began before it was let go
(an API replica's, say) may still be reading it."""


def keep_days_from_env(env: Mapping[str, str] | None = None) -> int:
    """``MARKET_LAKE_KEEP_DAYS``: whole days of snapshots kept; 0 keeps only the current one."""
    return env_int(os.environ if env is None else env, KEEP_DAYS_VAR, DEFAULT_KEEP_DAYS)


@dataclass(frozen=True)
class MaintenanceStats:
    """What one upkeep did, as the UI shows it."""

    rows_flushed: int
    """Rows of small commits kept in the catalog (DuckLake's data inlining), now in a file."""
    files_merged: int
    files_created: int
    snapshots_expired: int
    files_deleted: int
    orphans_deleted: int
    """Files in the data folder the catalog never took: a load killed before its commit."""
    snapshot: int
    """The lake's snapshot id afterwards."""


def _call(conn: duckdb.DuckDBPyConnection, sql: str) -> list[tuple[Any, ...]]:
    return with_conflict_retry(lambda: conn.execute(sql).fetchall())


def maintain(
    conn: duckdb.DuckDBPyConnection, keep_days: int, now: dt.datetime | None = None
) -> MaintenanceStats:
    """Merge, expire the snapshots older than ``keep_days`` before ``now``, and delete the
    files let go of more than ``CLEANUP_GRACE`` before ``now``. Merged-away files are let go
    of at once (the merged file keeps each row's snapshots, so time travel still works)."""
    now = now or dt.datetime.now(dt.UTC)
    flushed = _call(conn, FLUSH_SQL)  # (schema, table, rows_flushed) per table
    merged = _call(conn, MERGE_SQL)  # (schema, table, files_processed, files_created) per table
    horizon = (now - dt.timedelta(days=keep_days)).isoformat()
    expired = _call(conn, EXPIRE_SQL.format(horizon))
    let_go = (now - CLEANUP_GRACE).isoformat()
    deleted = _call(conn, CLEANUP_SQL.format(let_go))
    orphans = _call(conn, ORPHANS_SQL.format(let_go))
    return MaintenanceStats(
        rows_flushed=sum(int(row[2]) for row in flushed),
        files_merged=sum(int(row[2]) for row in merged),
        files_created=sum(int(row[3]) for row in merged),
        snapshots_expired=len(expired),
        files_deleted=len(deleted),
        orphans_deleted=len(orphans),
        snapshot=snapshot_id(conn),
    )


class LakeMaintenanceConfig(Config):
    keep_days: int | None = None
    """Whole days of snapshots to keep; unset: ``MARKET_LAKE_KEEP_DAYS`` (default 30)."""


@op(name="maintain_lake", description="Merge small files, expire old snapshots, delete files.")
def maintain_lake(
    context: OpExecutionContext, config: LakeMaintenanceConfig, duckdb: MarketLake
) -> Output[None]:
    keep_days = keep_days_from_env() if config.keep_days is None else config.keep_days
    settings = duckdb.store().settings
    with write_lock(settings):  # loads wait, rather than retry against each step
        conn = connect(settings)
        try:
            stats = maintain(conn, keep_days)
        finally:
            conn.close()
    context.log.info(
        f"lake maintenance: {stats.rows_flushed} inlined rows flushed, "
        f"{stats.files_merged} files merged into {stats.files_created}, "
        f"{stats.snapshots_expired} snapshots older than {keep_days} days expired, "
        f"{stats.files_deleted} files and {stats.orphans_deleted} orphaned files deleted"
    )
    return Output(
        None,
        metadata={
            "rows_flushed": stats.rows_flushed,
            "files_merged": stats.files_merged,
            "files_created": stats.files_created,
            "snapshots_expired": stats.snapshots_expired,
            "files_deleted": stats.files_deleted,
            "orphans_deleted": stats.orphans_deleted,
            "keep_days": keep_days,
            "snapshot": stats.snapshot,
        },
    )


@job(name=JOB_NAME, description="The shared lake's daily upkeep (lake mode only).")
def lake_maintenance() -> None:
    maintain_lake()


lake_maintenance_schedule = ScheduleDefinition(
    name=f"{JOB_NAME}_daily",
    job=lake_maintenance,
    cron_schedule=MAINTENANCE_CRON,
    execution_timezone=str(EXCHANGE_TZ),
    default_status=DefaultScheduleStatus.RUNNING,
)


def maintenance_definitions(
    env: Mapping[str, str] | None = None,
) -> tuple[list[JobDefinition], list[ScheduleDefinition]]:
    """The job and its schedule in lake mode; nothing in file mode. A bad
    ``MARKET_LAKE_KEEP_DAYS`` stops the code location at load, naming the variable."""
    if LakeSettings.from_env(env) is None:
        return [], []
    keep_days_from_env(env)
    return [lake_maintenance], [lake_maintenance_schedule]
