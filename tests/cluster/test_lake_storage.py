"""LakeStore, the lake's StoreWriter, held to DuckDBFileStore's counts on the same frames."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import polars as pl
import psycopg
import pytest
from dagster import EnvVar

from market_core.env import SettingsError
from market_core.home import DataHome
from market_core.lake import connect, snapshot_id, write_lock
from market_core.store import LoadStats
from market_pipeline.defs.resources import MarketDuckDB, MarketLake, store_from_env
from market_pipeline.store.bars import INSERT_SQL
from market_pipeline.store.duckdb_file import DuckDBFileStore
from market_pipeline.store.lake import LakeStore
from tests.cluster.services import PostgresService
from tests.pipeline.test_actions_store import AAPL_DIVIDENDS, AAPL_SPLITS, fetched, results

POOL_TIMEOUT_SECONDS = 180
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def lake(postgres: PostgresService, tmp_path: Path) -> LakeStore:
    return LakeStore(
        postgres_url=postgres.fresh_database(),
        shared_home=str(tmp_path / "shared"),
        data_home=str(tmp_path / "machine-a"),
    )


def bars(symbol: str, days: int, close: float = 10.0, start: int = 0) -> pl.DataFrame:
    first = dt.datetime(2024, 1, 2)
    stamps = [first + dt.timedelta(days=start + i) for i in range(days)]
    return pl.DataFrame(
        {
            "timestamp": stamps,
            "symbol": [symbol] * days,
            "open": [close] * days,
            "high": [close + 1] * days,
            "low": [close - 1] * days,
            "close": [close] * days,
            "volume": [1000] * days,
        },
        schema_overrides={"volume": pl.Int64},
    )


def lake_rows(lake: LakeStore, table: str = "ohlcv_data") -> list[tuple[object, ...]]:
    conn = connect(lake.settings, read_only=True)
    try:
        return conn.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall()
    finally:
        conn.close()


def file_rows(db: DuckDBFileStore, table: str = "ohlcv_data") -> list[tuple[object, ...]]:
    with duckdb.connect(db.database, read_only=True) as conn:
        return conn.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall()


def lake_snapshot(lake: LakeStore) -> int:
    conn = connect(lake.settings, read_only=True)
    try:
        return snapshot_id(conn)
    finally:
        conn.close()


def test_insert_revise_and_identical_reload_count_as_in_the_file(
    lake: LakeStore, home: DataHome
) -> None:
    db = DuckDBFileStore(database=str(home.duckdb_path))
    home.root.mkdir(parents=True, exist_ok=True)
    revised = bars("AAPL", 3, close=11.0, start=2)  # two stored days revised, one new
    steps = [
        [bars("AAPL", 4), bars("MSFT", 2)],  # a batch with nothing stored: plain inserts
        [revised, bars("MSFT", 2)],
        [revised, bars("MSFT", 2)],  # identical: nothing changes
    ]
    expected = [LoadStats(6, 6, 0), LoadStats(5, 1, 2), LoadStats(5, 0, 0)]
    snapshots = []
    for frames, stats in zip(steps, expected, strict=True):
        assert lake.load(frames) == db.load(frames) == stats
        assert lake_rows(lake) == file_rows(db)
        snapshots.append(lake_snapshot(lake))
    assert snapshots[1] == snapshots[0] + 1
    assert snapshots[2] == snapshots[1], "an identical reload committed a snapshot"
    assert len(lake_rows(lake)) == 7


def test_corporate_actions_upsert_and_vanish_as_in_the_file(
    lake: LakeStore, home: DataHome
) -> None:
    db = DuckDBFileStore(database=str(home.duckdb_path))
    fetched(home, "AAPL", AAPL_SPLITS, AAPL_DIVIDENDS)
    first = results(home, ["AAPL"])
    assert lake.load_actions(first) == db.load_actions(first)
    before = lake_snapshot(lake)
    assert lake.load_actions(first) == db.load_actions(first)  # identical: nothing changes
    assert lake_snapshot(lake) == before
    # The 2014 split vanished from the answer, the 2020 one was revised.
    fetched(home, "AAPL", [("2020-08-31", "5.0000")], AAPL_DIVIDENDS)
    second = results(home, ["AAPL"])
    stats = lake.load_actions(second)
    assert stats == db.load_actions(second)
    assert (stats.inserted, stats.updated, stats.deleted) == (0, 1, 1)
    assert stats.deleted_by_symbol == {"AAPL": ["2014-06-09 split"]}
    assert lake_rows(lake, "corporate_actions") == file_rows(db, "corporate_actions")
    assert lake.stored_ex_dates(["AAPL", "MSFT"]) == db.stored_ex_dates(["AAPL", "MSFT"])
    assert dt.date(2020, 8, 31) in lake.stored_ex_dates(["AAPL"])["AAPL"]


def test_a_failed_batch_leaves_nothing(lake: LakeStore) -> None:
    lake.load([bars("AAPL", 2)])
    stored, before = lake_rows(lake), lake_snapshot(lake)
    good = bars("AAPL", 3, close=12.0).with_columns(pl.col("volume").cast(pl.String))
    bad = bars("MSFT", 2).with_columns(pl.lit("not a number").alias("volume"))
    with pytest.raises(duckdb.ConversionException):
        lake.load([good, bad])
    assert lake_rows(lake) == stored
    assert lake_snapshot(lake) == before


def revise_many(fields: dict[str, str], symbol: str, rounds: int) -> list[LoadStats]:
    """Every round revises every stored bar of the symbol: each commit rewrites the table."""
    lake = LakeStore(**fields)
    return [lake.load([bars(symbol, 20, close=100.0 + i)]) for i in range(1, rounds + 1)]


def test_two_processes_loading_disjoint_symbols_at_once_both_succeed(
    lake: LakeStore, tmp_path: Path
) -> None:
    lake.load([bars("AAPL", 20), bars("MSFT", 20)])
    machine_a = {"postgres_url": lake.postgres_url, "shared_home": lake.shared_home}
    machine_a["data_home"] = lake.data_home
    machine_b = {**machine_a, "data_home": str(tmp_path / "machine-b")}
    rounds = 4
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        a = pool.apply_async(revise_many, (machine_a, "AAPL", rounds))
        b = pool.apply_async(revise_many, (machine_b, "MSFT", rounds))
        outcomes = [a.get(POOL_TIMEOUT_SECONDS), b.get(POOL_TIMEOUT_SECONDS)]
    for stats in outcomes:
        assert stats == [LoadStats(20, 0, 20)] * rounds
    closes = {row[1]: row[5] for row in lake_rows(lake)}
    assert closes == {"AAPL": 100.0 + rounds, "MSFT": 100.0 + rounds}


def test_the_duckdb_resource_is_the_lake_only_when_postgres_is_set(
    postgres: PostgresService, home: DataHome, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert store_from_env(home) == MarketDuckDB(database=str(home.duckdb_path))
    monkeypatch.setenv("MARKET_POSTGRES_URL", postgres.url)
    monkeypatch.setenv("MARKET_SHARED_HOME", str(tmp_path / "shared"))
    store = store_from_env(home)
    assert isinstance(store, MarketLake)
    for field, name in (
        ("postgres_url", "MARKET_POSTGRES_URL"),
        ("shared_home", "MARKET_SHARED_HOME"),
    ):
        value = getattr(store, field)
        assert isinstance(value, EnvVar) and value.env_var_name == name, "never a value in the UI"
    assert store.data_home == str(home.root)
    monkeypatch.delenv("MARKET_SHARED_HOME")
    with pytest.raises(SettingsError, match="MARKET_SHARED_HOME"):
        store_from_env(home)


LOAD_NEW = """
import sys
from market_pipeline.store.lake import LakeStore
from tests.cluster.test_lake_storage import bars
lake = LakeStore(postgres_url=sys.argv[1], shared_home=sys.argv[2], data_home=sys.argv[3])
print(lake.load([bars("NEW", 50)]), flush=True)
"""


def lock_waiters(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        ).fetchone()
    return int(row[0]) if row else 0


def test_a_load_waits_for_the_writer_before_it_and_sees_its_rows(
    lake: LakeStore, tmp_path: Path
) -> None:
    """Inserts never conflict in DuckLake: had the load not waited, it would have found the
    symbol new and stored its bars a second time."""
    lake_snapshot(lake)  # the catalog exists
    with write_lock(lake.settings):
        loader = subprocess.Popen(
            [sys.executable, "-c", LOAD_NEW, lake.postgres_url, lake.shared_home,
             str(tmp_path / "machine-b")],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + POOL_TIMEOUT_SECONDS
            while lock_waiters(lake.postgres_url) == 0:
                assert loader.poll() is None, loader.communicate()
                assert time.monotonic() < deadline, "the loader never waited for the lock"
                time.sleep(0.1)
            conn = connect(lake.settings)  # this writer stores the symbol first
            try:
                conn.register("incoming", bars("NEW", 50).to_arrow())
                conn.execute(INSERT_SQL)
            finally:
                conn.close()
        except BaseException:
            loader.kill()
            loader.wait(timeout=30)
            raise
    out, err = loader.communicate(timeout=POOL_TIMEOUT_SECONDS)
    assert loader.returncode == 0, err
    assert out.strip() == repr(LoadStats(50, 0, 0))
    assert len(lake_rows(lake)) == 50
