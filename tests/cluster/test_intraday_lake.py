"""The lake's ``load_intraday`` held to the file's on the same frames, and the intraday graph run
in lake mode: the Parquet under MARKET_SHARED_HOME, the bars in the lake."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import polars as pl
import pytest
from dagster import DagsterInstance, materialize

from market_core.home import DataHome
from market_core.lake import connect
from market_core.store import LoadStats
from market_pipeline.defs.intraday import intraday_pipeline
from market_pipeline.defs.resources import MarketLake, resources_from_env
from market_pipeline.store.duckdb_file import DuckDBFileStore
from market_pipeline.store.lake import LakeStore
from tests.cluster.services import PostgresService
from tests.cluster.test_lake_storage import file_rows, lake_rows, lake_snapshot
from tests.pipeline.helpers import failure_text


@pytest.fixture
def lake(postgres: PostgresService, tmp_path: Path) -> LakeStore:
    return LakeStore(
        postgres_url=postgres.fresh_database(),
        shared_home=str(tmp_path / "shared"),
        data_home=str(tmp_path / "machine-a"),
    )


def bars(symbol: str, count: int, close: float = 10.0, start: int = 0) -> pl.DataFrame:
    first = dt.datetime(2024, 11, 8, 9, 30)
    stamps = [first + dt.timedelta(minutes=5 * (start + i)) for i in range(count)]
    return pl.DataFrame(
        {"timestamp": stamps, "symbol": [symbol] * count, "interval": ["5min"] * count,
         "open": [close] * count, "high": [close + 1] * count, "low": [close - 1] * count,
         "close": [close] * count, "volume": [1000] * count},
        schema_overrides={"volume": pl.Int64},
    )  # fmt: skip


def test_insert_revise_and_identical_reload_count_as_in_the_file(
    lake: LakeStore, home: DataHome
) -> None:
    db = DuckDBFileStore(database=str(home.duckdb_path))
    home.root.mkdir(parents=True, exist_ok=True)
    revised = bars("AAPL", 3, close=11.0, start=2)  # two stored bars revised, one new
    other_interval = bars("AAPL", 2).with_columns(pl.lit("1min").alias("interval"))
    steps = [
        [bars("AAPL", 4), bars("MSFT", 2)],
        [revised, bars("MSFT", 2), other_interval],  # same timestamps, another interval: new
        [revised, bars("MSFT", 2), other_interval],  # identical: nothing changes
    ]
    expected = [LoadStats(6, 6, 0), LoadStats(7, 3, 2), LoadStats(7, 0, 0)]
    snapshots = []
    for frames, stats in zip(steps, expected, strict=True):
        assert lake.load_intraday(frames) == db.load_intraday(frames) == stats
        assert lake_rows(lake, "ohlcv_intraday") == file_rows(db, "ohlcv_intraday")
        snapshots.append(lake_snapshot(lake))
    assert snapshots[2] == snapshots[1], "an identical reload committed a snapshot"
    assert len(lake_rows(lake, "ohlcv_intraday")) == 9
    assert lake_rows(lake, "ohlcv_data") == [], "the daily table is untouched"


def test_a_failed_intraday_load_stores_nothing(lake: LakeStore) -> None:
    lake.load_intraday([bars("AAPL", 2)])
    before = lake_rows(lake, "ohlcv_intraday")
    with pytest.raises(ValueError, match="given twice"):
        lake.load_intraday([bars("AAPL", 3, close=12.0), bars("AAPL", 1, close=13.0)])
    assert lake_rows(lake, "ohlcv_intraday") == before


def test_a_reader_finds_the_intraday_table_before_any_intraday_load(lake: LakeStore) -> None:
    conn = connect(lake.settings, read_only=True)
    try:
        assert conn.execute("SELECT count(*) FROM ohlcv_intraday").fetchall() == [(0,)]
    finally:
        conn.close()


def test_the_intraday_graph_runs_in_lake_mode(
    postgres: PostgresService,
    tmp_path: Path,
    instance: DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The offline sample through the graph: raw and clean Parquet in the shared folder, the
    bars in the lake, and a second run stores nothing new."""
    shared = tmp_path / "shared"
    monkeypatch.setenv("MARKET_DATA_HOME", str(tmp_path / "machine-a"))
    monkeypatch.setenv("MARKET_SHARED_HOME", str(shared))
    monkeypatch.setenv("MARKET_POSTGRES_URL", postgres.fresh_database())
    monkeypatch.setenv("ALPHAVANTAGE_INTRADAY_INTERVAL", "30min")
    instance.add_dynamic_partitions("symbols", ["AAPL"])
    resources = resources_from_env()
    store = resources["duckdb"]
    assert isinstance(store, MarketLake)
    result = materialize([intraday_pipeline], instance=instance, resources=resources,
                         partition_key="AAPL")  # fmt: skip
    assert result.success, failure_text(result)
    home = DataHome.from_env()
    assert home.raw_intraday_file("AAPL", "30min").is_relative_to(shared.resolve())
    assert home.clean_intraday_file("AAPL", "30min").exists()
    lake = LakeStore(postgres_url=os.environ["MARKET_POSTGRES_URL"], shared_home=str(shared),
                      data_home=str(tmp_path / "machine-a"))  # fmt: skip
    stored = lake_rows(lake, "ohlcv_intraday")
    assert stored and {row[1:3] for row in stored} == {("AAPL", "30min")}
    again = materialize([intraday_pipeline], instance=instance, resources=resources,
                        partition_key="AAPL")  # fmt: skip
    assert again.success and lake_rows(lake, "ohlcv_intraday") == stored
