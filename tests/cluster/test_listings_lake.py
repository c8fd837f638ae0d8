"""The listings table in the shared lake (a real PostgreSQL catalog): the file's semantics on
DuckLake's MERGE, and the asset writing there when ``MARKET_POSTGRES_URL`` is set."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest
from dagster import DagsterInstance, materialize

from market_core.home import DataHome
from market_core.lake import connect, snapshot_id
from market_pipeline.defs.listings import listings
from market_pipeline.defs.resources import resources_from_env
from market_pipeline.store.lake import LakeStore
from market_pipeline.store.listings import LakeListings, listings_table
from tests.cluster.services import PostgresService

COLUMNS = ("symbol", "name", "exchange", "asset_type", "ipo_date", "delisting_date", "status",
           "first_seen", "last_seen")  # fmt: skip
OLD_AAC = ("AAC", "AAC Holdings Inc", "NYSE", "Stock", dt.date(2014, 10, 2), dt.date(2020, 1, 14),
           "delisted", dt.date(2025, 1, 6), dt.date(2025, 1, 6))  # fmt: skip
NEW_AAC = ("AAC", "Ares Acquisition Corp", "NYSE", "Stock", dt.date(2021, 3, 25), None, "active",
           dt.date(2025, 1, 6), dt.date(2025, 1, 6))  # fmt: skip


@pytest.fixture
def lake(postgres: PostgresService, tmp_path: Path) -> LakeStore:
    return LakeStore(postgres.fresh_database(), str(tmp_path / "shared"), str(tmp_path / "home"))


def snapshot(store: LakeStore) -> int:
    conn = connect(store.settings, read_only=True)
    try:
        return snapshot_id(conn)
    finally:
        conn.close()


def test_a_reused_ticker_is_two_rows_and_an_identical_reload_commits_nothing(
    lake: LakeStore,
) -> None:
    table = LakeListings(lake)
    assert table.read() is None, "no listing loaded yet"
    first = table.load(pl.DataFrame([OLD_AAC, NEW_AAC], schema=COLUMNS, orient="row"))
    assert (first.inserted, first.updated) == (2, 0)
    before = snapshot(lake)
    again = table.load(pl.DataFrame([OLD_AAC, NEW_AAC], schema=COLUMNS, orient="row"))
    assert (again.inserted, again.updated) == (0, 0) and snapshot(lake) == before
    later = (*NEW_AAC[:5], dt.date(2025, 2, 3), "delisted", dt.date(2025, 2, 10),
             dt.date(2025, 2, 10))  # fmt: skip
    assert table.load(pl.DataFrame([later], schema=COLUMNS, orient="row")).updated == 1
    read = table.read()
    assert read is not None and read.rows() == [
        OLD_AAC, (*later[:7], dt.date(2025, 1, 6), dt.date(2025, 2, 10))
    ]  # fmt: skip


def test_the_asset_loads_the_listing_into_the_lake(
    postgres: PostgresService,
    instance: DagsterInstance,
    home: DataHome,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, shared = postgres.fresh_database(), tmp_path / "shared"
    monkeypatch.setenv("MARKET_POSTGRES_URL", url)
    monkeypatch.setenv("MARKET_SHARED_HOME", str(shared))
    assert materialize([listings], instance=instance, resources=resources_from_env()).success
    read = listings_table(LakeStore(url, str(shared), str(home.root))).read()
    assert read is not None and read.height == 22
    assert read.filter(pl.col("symbol") == "AAC").height == 2
    assert DataHome(home.root, tmp_path / "shared").raw_listings_file("active").exists()
