"""The lake_maintenance job on a real lake: small files merged, old snapshots expired, their
files deleted, the data unchanged, and the figures in the run's metadata."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from dagster import DagsterInstance

from market_core.env import SettingsError
from market_core.lake import connect
from market_pipeline.defs.maintenance import (
    lake_maintenance,
    lake_maintenance_schedule,
    maintain,
    maintenance_definitions,
)
from market_pipeline.defs.resources import MarketLake
from market_pipeline.store.lake import LakeStore
from tests.cluster.services import PostgresService
from tests.cluster.test_lake_storage import bars, lake_rows, lake_snapshot

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def lake(postgres: PostgresService, tmp_path: Path) -> LakeStore:
    return LakeStore(
        postgres_url=postgres.fresh_database(),
        shared_home=str(tmp_path / "shared"),
        data_home=str(tmp_path / "machine"),
    )


def parquet_files(lake: LakeStore) -> set[Path]:
    return set((Path(lake.shared_home) / "lake").rglob("*.parquet"))


def bar_files(lake: LakeStore) -> set[Path]:
    """ohlcv_data's files (the change log has files of its own: a revision's changes)."""
    return {p for p in parquet_files(lake) if "ohlcv_data" in p.parts}


def run(lake: LakeStore, keep_days: int) -> dict[str, int]:
    result = lake_maintenance.execute_in_process(
        run_config={"ops": {"maintain_lake": {"config": {"keep_days": keep_days}}}},
        resources={"duckdb": MarketLake(**dataclasses.asdict(lake))},
        instance=DagsterInstance.ephemeral(),
    )
    assert result.success
    [output] = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    assert output.step_output_data is not None
    entries = output.step_output_data.metadata
    return {key: int(value.value) for key, value in entries.items()}  # type: ignore[arg-type]


def load_small_commits(lake: LakeStore) -> None:
    for symbol in ("AAPL", "MSFT", "NVDA"):  # three commits, three small files (not inlined)
        lake.load([bars(symbol, 30)])
    lake.load([bars("MSFT", 30, close=11.0)])  # the old rows live on for time travel


def closes_at(conn: duckdb.DuckDBPyConnection, version: int) -> list[tuple[str, float]]:
    return conn.execute(
        f"SELECT symbol, avg(close) FROM ohlcv_data AT (VERSION => {version}) GROUP BY 1 ORDER BY 1"
    ).fetchall()


def test_the_job_merges_small_files_keeps_recent_snapshots_and_says_so(lake: LakeStore) -> None:
    load_small_commits(lake)
    rows, files, before = lake_rows(lake), parquet_files(lake), lake_snapshot(lake)

    figures = run(lake, keep_days=30)
    assert figures["files_merged"] == 3 and figures["files_created"] == 1
    assert figures["snapshots_expired"] == 0
    assert figures["files_deleted"] == 0, "let go of just now: a reader may still scan them"
    assert figures["snapshot"] == lake_snapshot(lake) > before  # one more per table flushed
    assert parquet_files(lake) > files
    assert lake_rows(lake) == rows
    conn = connect(lake.settings, read_only=True)
    try:
        assert closes_at(conn, before - 1) == [("AAPL", 10.0), ("MSFT", 10.0), ("NVDA", 10.0)]
    finally:
        conn.close()


def test_expired_snapshots_and_merged_files_are_deleted_a_day_later(lake: LakeStore) -> None:
    load_small_commits(lake)
    rows, files = lake_rows(lake), bar_files(lake)
    conn = connect(lake.settings)
    try:
        today = maintain(conn, keep_days=30)
        assert today.files_merged == 3 and today.files_deleted == 0
        later = maintain(conn, keep_days=0, now=dt.datetime.now(dt.UTC) + dt.timedelta(days=2))
        assert later.snapshots_expired == today.snapshot, "every snapshot but the current one"
        assert later.files_deleted == len(files), "the merged ones and the revised one"
        assert not bar_files(lake) & files
        assert lake_rows(lake) == rows
        with pytest.raises(duckdb.Error):
            closes_at(conn, today.snapshot - 1)
    finally:
        conn.close()


def test_rows_of_tiny_commits_kept_in_the_catalog_are_written_to_a_file(lake: LakeStore) -> None:
    lake.load([bars("AAPL", 3)])
    lake.load([bars("MSFT", 2)])
    rows = lake_rows(lake)
    assert not parquet_files(lake), "tiny commits stay in the catalog"
    figures = run(lake, keep_days=30)
    assert figures["rows_flushed"] == 5 + 2, "the bars and the change log's two commit rows"
    assert len(bar_files(lake)) == 1 and len(parquet_files(lake)) == 2, "one file a table"
    assert lake_rows(lake) == rows


KILLED_LOAD = """
import os, sys
from market_pipeline.store.bars import merge_bars
from market_pipeline.store.lake import LakeStore
from market_core.lake import connect
import pyarrow as pa
from tests.cluster.test_lake_storage import bars

lake = LakeStore(postgres_url=sys.argv[1], shared_home=sys.argv[2], data_home=sys.argv[3])
conn = connect(lake.settings)
conn.begin()
conn.register("incoming", bars("NVDA", 500).to_arrow())
merge_bars(conn)
os.kill(os.getpid(), 9)  # after the files were written, before the commit
"""


def test_the_files_of_a_load_killed_before_its_commit_are_deleted_a_day_later(
    lake: LakeStore,
) -> None:
    lake.load([bars("AAPL", 30)])
    rows, files = lake_rows(lake), parquet_files(lake)
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_LOAD, lake.postgres_url, lake.shared_home, lake.data_home],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert killed.returncode == -9, killed.stderr
    orphans = parquet_files(lake) - files
    assert orphans, "the killed load wrote its file"
    assert lake_rows(lake) == rows, "and nothing of it is in the table"
    conn = connect(lake.settings)
    try:
        assert maintain(conn, keep_days=30).orphans_deleted == 0, "a load may still be running"
        later = maintain(conn, keep_days=30, now=dt.datetime.now(dt.UTC) + dt.timedelta(days=2))
    finally:
        conn.close()
    assert later.orphans_deleted == len(orphans)
    assert not parquet_files(lake) & orphans
    assert lake_rows(lake) == rows


def test_the_job_and_schedule_exist_only_in_lake_mode(postgres: PostgresService) -> None:
    assert maintenance_definitions({}) == ([], [])
    lake_env = {"MARKET_POSTGRES_URL": postgres.url, "MARKET_SHARED_HOME": "/shared"}
    assert maintenance_definitions(lake_env) == ([lake_maintenance], [lake_maintenance_schedule])
    with pytest.raises(SettingsError, match="MARKET_LAKE_KEEP_DAYS"):
        maintenance_definitions({**lake_env, "MARKET_LAKE_KEEP_DAYS": "a month"})


def test_the_code_location_has_the_job_and_its_schedule_in_lake_mode(
    postgres: PostgresService, tmp_path: Path
) -> None:
    probe = (
        "from market_pipeline.definitions import defs\n"
        "location = defs()\n"
        "print(sorted(j.name for j in location.resolve_all_job_defs()))\n"
        "print(sorted(s.name for s in location.schedules or []))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MARKET_", "DAGSTER_"))}
    env["MARKET_DATA_HOME"] = str(tmp_path / "home")
    lake_env = {"MARKET_POSTGRES_URL": postgres.url, "MARKET_SHARED_HOME": str(tmp_path / "s")}

    def names(extra: dict[str, str]) -> list[str]:
        done = subprocess.run(
            [sys.executable, "-c", probe], env={**env, **extra}, cwd=REPO,
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()

    lake_jobs, lake_schedules = names(lake_env)
    assert "lake_maintenance" in lake_jobs and "lake_maintenance_daily" in lake_schedules
    file_jobs, file_schedules = names({})
    assert "lake_maintenance" not in file_jobs and "lake_maintenance_daily" not in file_schedules
