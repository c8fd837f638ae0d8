"""The universe (``MARKET_UNIVERSE``) against a real instance, real runs and the live stub: the
sensor registers what the listing selects beside the watchlist, delisted histories load last
and once, the quota plan counts the listing refresh, and a bad value names its variable."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from dagster import (
    AssetKey,
    DagsterInstance,
    DefaultSensorStatus,
    RunRequest,
    build_schedule_context,
    build_sensor_context,
    materialize,
)

from market_core.exchange import EXCHANGE_TZ
from market_core.home import DataHome
from market_pipeline.definitions import defs
from market_pipeline.defs.automation import daily_update, plan_update, watchlist_sensor
from market_pipeline.defs.daily import symbol_pipeline
from market_pipeline.defs.listings import listings, listings_refresh
from market_pipeline.defs.resources import resources_from_env
from market_pipeline.defs.settings import parse_universe
from market_pipeline.listings.plan import SymbolListing
from market_pipeline.listings.universe import Universe
from tests.conftest import ENV_VARS
from tests.orchestration.helpers import SensorTick, Tick, apply_partition_requests, ranges
from tests.pipeline.helpers import materialized, resolution_problem, table_rows
from tests.stubs.alpha_vantage import AlphaVantageStub

TRADING_DAY = dt.datetime(2025, 3, 4, 18, 30, tzinfo=EXCHANGE_TZ)  # a Tuesday
REPO = Path(__file__).resolve().parents[2]
NASDAQ_STOCKS = ["AMZN", "GOOGL", "MSFT", "NVDA", "TSLA"]
"""The sample's active NASDAQ stocks (AAPL aside), by symbol."""


@pytest.fixture(autouse=True)
def no_universe(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see the developer's own universe."""
    for name in ("MARKET_UNIVERSE", "MARKET_LISTINGS_REFRESH_DAYS"):
        monkeypatch.delenv(name, raising=False)


def registered(instance: DagsterInstance) -> list[str]:
    return instance.get_dynamic_partitions("symbols")


def sensor_tick(instance: DagsterInstance) -> SensorTick:
    """One watchlist tick, applied to the instance the way the sensor daemon applies it."""
    with build_sensor_context(instance=instance, resources=resources_from_env()) as context:
        data = watchlist_sensor.evaluate_tick(context)
    apply_partition_requests(instance, data.dynamic_partitions_requests or [])
    return data


def refresh_tick(instance: DagsterInstance) -> Tick:
    with build_sensor_context(instance=instance, resources=resources_from_env()) as context:
        return listings_refresh.evaluate_tick(context)


def schedule_tick(instance: DagsterInstance) -> Tick:
    with build_schedule_context(
        instance=instance, scheduled_execution_time=TRADING_DAY, resources=resources_from_env()
    ) as context:
        return daily_update.evaluate_tick(context)


def load_listing(instance: DagsterInstance) -> None:
    assert materialize([listings], instance=instance, resources=resources_from_env()).success


def run_requests(instance: DagsterInstance, requests: list[RunRequest]) -> set[str]:
    """Run each request as the daemon would; the symbols whose bars were fetched."""
    fetched: set[str] = set()
    for request in requests:
        result = materialize([symbol_pipeline], instance=instance, tags=request.tags,
                             resources=resources_from_env(backoff_seconds=0.01))  # fmt: skip
        assert result.success
        fetched |= materialized(result, "raw_data")
    return fetched


def test_the_sensor_registers_the_universes_symbols_beside_the_watchlists(
    instance: DagsterInstance, home: DataHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MARKET_SYMBOLS", "IBM,AAPL")
    monkeypatch.setenv("MARKET_UNIVERSE", "exchange=NASDAQ;asset_type=Stock")
    first = sensor_tick(instance)
    assert registered(instance) == ["IBM", "AAPL"], "no listing yet: the watchlist alone"
    assert ranges(first.run_requests) == [("IBM", "AAPL")]

    load_listing(instance)
    data = sensor_tick(instance)
    assert registered(instance) == ["IBM", "AAPL", *NASDAQ_STOCKS], "no ETF, no delisted one"
    assert ranges(data.run_requests) == [("AMZN", "TSLA")]
    assert "match the watchlist and the universe" in (sensor_tick(instance).skip_message or "")

    monkeypatch.setenv("MARKET_UNIVERSE", "exchange=nasdaq; asset_type=stock; status=all")
    data = sensor_tick(instance)
    # The survivorship-free set: the delisted ones after, the oldest delisting last; CHNG 6 is
    # no ticker (rejected), AAC and TWTR are NYSE's.
    assert registered(instance)[7:] == ["ATVI", "XLNX", "YHOO"]
    assert ranges(data.run_requests) == [("ATVI", "YHOO")]

    monkeypatch.setenv("MARKET_UNIVERSE", "exchange=NYSE ARCA,BATS;asset_type=ETF")
    sensor_tick(instance)
    assert registered(instance) == ["IBM", "AAPL", "SPY"], "the others unregistered"


def test_a_universe_on_a_reused_ticker_selects_the_symbol_once() -> None:
    listing = pl.DataFrame(
        [("AAC", "NYSE", "Stock", dt.date(2014, 10, 2), dt.date(2020, 1, 14), "delisted"),
         ("AAC", "NYSE", "Stock", dt.date(2021, 3, 25), None, "active"),
         ("OLD", "NYSE", "Stock", dt.date(1990, 1, 2), dt.date(2001, 1, 2), "delisted"),
         ("NEW", "NYSE", "Stock", dt.date(1990, 1, 2), dt.date(2024, 1, 2), "delisted")],
        schema=["symbol", "exchange", "asset_type", "ipo_date", "delisting_date", "status"],
        orient="row",
    )  # fmt: skip
    everything = Universe(statuses=frozenset({"active", "delisted"}))
    assert everything.select(listing) == ["AAC", "NEW", "OLD"], "AAC trades: it goes first"
    assert Universe(statuses=frozenset({"delisted"})).select(listing) == ["AAC", "NEW", "OLD"]
    assert Universe().select(listing) == ["AAC"]


def test_unset_the_universe_changes_nothing(
    instance: DagsterInstance, home: DataHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MARKET_SYMBOLS", "IBM")
    load_listing(instance)  # materialized by hand: it selects nothing by itself
    sensor_tick(instance)
    assert registered(instance) == ["IBM"]
    assert "MARKET_UNIVERSE is unset" in (refresh_tick(instance).skip_message or "")


def test_an_unreadable_listing_unregisters_nothing(
    instance: DagsterInstance, home: DataHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance.add_dynamic_partitions("symbols", ["IBM", "AAPL", "MSFT"])
    monkeypatch.setenv("MARKET_SYMBOLS", "IBM")
    monkeypatch.setenv("MARKET_UNIVERSE", "status=all")
    data = sensor_tick(instance)
    assert registered(instance) == ["IBM", "AAPL", "MSFT"] and not data.run_requests


def test_an_empty_watchlist_beside_a_universe_unregisters_nothing(
    instance: DagsterInstance, home: DataHome, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    load_listing(instance)
    instance.add_dynamic_partitions("symbols", ["IBM"])
    watchlist = tmp_path / "watchlist.txt"
    watchlist.write_text("# nothing yet\n")
    monkeypatch.setenv("MARKET_WATCHLIST", str(watchlist))
    monkeypatch.setenv("MARKET_UNIVERSE", "asset_type=ETF")
    data = sensor_tick(instance)
    assert registered(instance) == ["IBM", "QQQ", "SPY"], "the universe's join, IBM stays"
    assert ranges(data.run_requests) == [("QQQ", "SPY")]


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("MARKET_UNIVERSE", "exchnage=NYSE", "unknown key 'exchnage'"),
        ("MARKET_UNIVERSE", "exchange=NASDQ", "exchange does not know 'NASDQ'"),
        ("MARKET_UNIVERSE", "asset_type=Bond", "asset_type does not know 'Bond' (Stock/ETF)"),
        ("MARKET_UNIVERSE", "status=gone", "status does not know 'gone'"),
        ("MARKET_UNIVERSE", "NYSE", "'NYSE' is not key=value"),
        ("MARKET_UNIVERSE", "status=active;status=all", "status is given twice"),
        ("MARKET_UNIVERSE", "exchange=NYSE,", "exchange has an empty value"),
        ("MARKET_UNIVERSE", ";", "no key=value part"),
        ("MARKET_LISTINGS_REFRESH_DAYS", "-1", "must be 0 (only by hand) or more"),
        ("MARKET_LISTINGS_REFRESH_DAYS", "weekly", "cannot be coerced into an int"),
    ],
)
def test_a_bad_value_fails_resolution_naming_its_variable(
    home: DataHome, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, says: str
) -> None:
    problem = resolution_problem(monkeypatch, variable, value)
    assert variable in problem and says in problem, problem
    if variable == "MARKET_UNIVERSE":
        assert "e.g. exchange=NYSE,NASDAQ;asset_type=Stock;status=active" in problem


def test_the_syntax_is_case_and_space_insensitive_and_left_out_keys_select_all() -> None:
    universe = parse_universe(" Exchange = nyse arca , NASDAQ ; status = ALL ")
    assert universe == Universe(
        exchanges=frozenset({"NYSE ARCA", "NASDAQ"}), statuses=frozenset({"active", "delisted"})
    )
    assert universe.describe() == "exchange=NASDAQ,NYSE ARCA;asset_type=any;status=all"
    assert parse_universe("asset_type=etf") == Universe(asset_types=frozenset({"ETF"}))
    assert parse_universe("  ") is None


def test_the_listing_is_refreshed_on_the_first_run_then_when_it_is_old(
    keyed: AlphaVantageStub,
    instance: DagsterInstance,
    home: DataHome,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MARKET_UNIVERSE", "status=active")
    [first] = refresh_tick(instance).run_requests or []
    assert first.run_key and first.run_key.startswith("listings:")
    load_listing(instance)
    assert "is fresh; the next refresh is due from" in (refresh_tick(instance).skip_message or "")
    monkeypatch.setenv("MARKET_LISTINGS_REFRESH_DAYS", "0")
    assert "refreshed by hand" in (refresh_tick(instance).skip_message or "")


def test_the_refresh_waits_for_its_two_calls(
    keyed: AlphaVantageStub, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MARKET_UNIVERSE", "status=active")
    monkeypatch.setenv("ALPHAVANTAGE_REQUESTS_PER_DAY", "1")
    skipped = refresh_tick(instance)
    assert not skipped.run_requests
    assert "needs 2 calls" in (skipped.skip_message or "") and "only 1 left" in (
        skipped.skip_message or ""
    )


def test_the_quota_plan_keeps_the_two_calls_of_a_due_refresh(
    keyed: AlphaVantageStub,
    instance: DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("ALPHAVANTAGE_REQUESTS_PER_DAY", "7")
    instance.add_dynamic_partitions("symbols", ["A", "B", "C"])
    capfd.readouterr()
    schedule_tick(instance)
    assert "updating all 3 symbols: 7 calls left today" in capfd.readouterr().err

    monkeypatch.setenv("MARKET_UNIVERSE", "status=active")  # no listing yet: a refresh is due
    schedule_tick(instance)
    log = capfd.readouterr().err
    assert "updating all 3 symbols: 5 calls left today" in log
    assert "corporate actions: 3 due, 1 fetched" in log
    assert "2 calls kept for the listing refresh (LISTING_STATUS active and delisted)" in log


def test_delisted_histories_load_once_and_are_not_fetched_again(
    keyed: AlphaVantageStub,
    instance: DagsterInstance,
    home: DataHome,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MARKET_SYMBOLS", "IBM")
    monkeypatch.setenv("MARKET_UNIVERSE", "exchange=NASDAQ;status=delisted")
    load_listing(instance)
    first = sensor_tick(instance)
    assert registered(instance) == ["IBM", "ATVI", "XLNX", "YHOO"]
    assert run_requests(instance, list(first.run_requests or [])) == {
        "IBM", "ATVI", "XLNX", "YHOO"
    }  # fmt: skip
    daily = "TIME_SERIES_DAILY"
    assert [keyed.count(s, daily) for s in ("IBM", "ATVI", "XLNX", "YHOO")] == [1, 1, 1, 1]

    capfd.readouterr()
    update = schedule_tick(instance)
    assert ranges(update.run_requests) == [("IBM", "IBM")]
    log = capfd.readouterr().err
    assert "3 delisted symbols not fetched again (history loaded past their delisting date)" in log
    assert "3 calls saved: ATVI, XLNX, YHOO" in log
    assert run_requests(instance, list(update.run_requests or [])) == {"IBM"}
    assert [keyed.count(s, daily) for s in ("IBM", "ATVI", "XLNX", "YHOO")] == [2, 1, 1, 1]

    # Out of the universe and back: registered again, but not loaded again.
    monkeypatch.setenv("MARKET_UNIVERSE", "exchange=NASDAQ;asset_type=ETF")
    sensor_tick(instance)
    monkeypatch.setenv("MARKET_UNIVERSE", "exchange=NASDAQ;status=delisted")
    capfd.readouterr()
    again = sensor_tick(instance)
    assert set(registered(instance)) == {"IBM", "ATVI", "XLNX", "YHOO"}
    assert not again.run_requests
    assert "3 delisted symbols registered without a first load" in capfd.readouterr().err
    assert keyed.count(symbol=None, function=daily) == 5


def test_delisted_symbols_go_after_every_active_one_the_oldest_last() -> None:
    listings = {
        "YHOO": SymbolListing("YHOO", "delisted", dt.date(2017, 6, 16)),
        "ATVI": SymbolListing("ATVI", "delisted", dt.date(2023, 10, 13)),
        "AAPL": SymbolListing("AAPL", "active", None),
    }
    registered = ["YHOO", "ATVI", "AAPL", "MSFT"]
    stale = {"AAPL": 5, "MSFT": 6}  # loaded before; the delisted ones never
    plan = plan_update(registered, stale, 3, listings=listings)
    assert plan.symbols == ["ATVI", "AAPL", "MSFT"] and plan.deferred == ["YHOO"]
    plan = plan_update(registered, stale, 1, listings=listings)
    assert plan.symbols == ["AAPL"] and plan.deferred == ["MSFT", "ATVI", "YHOO"]
    plan = plan_update(registered, stale, 1)
    assert plan.symbols == ["YHOO"], "without a listing, the stalest first, as before"


def test_the_listing_asset_and_its_sensor_are_in_the_code_location() -> None:
    location = defs()
    repo = location.get_repository_def()
    sensor = repo.get_sensor_def("listings_refresh")
    assert sensor.job_name == "listings_job"
    assert sensor.default_status == DefaultSensorStatus.RUNNING
    node = location.resolve_asset_graph().get(AssetKey("listings"))
    assert node.partitions_def is None and node.parent_keys == set()
    assert location.resolve_job_def("listings_job").asset_layer.selected_asset_keys == {
        AssetKey("listings")
    }


def test_make_ingest_stops_on_a_bad_universe_with_one_line_naming_it(tmp_path: Path) -> None:
    base = {k: v for k, v in os.environ.items() if k not in (*ENV_VARS, "MARKET_UNIVERSE")}
    env = {**base, "MARKET_DATA_HOME": str(tmp_path), "MARKET_UNIVERSE": "exchange=NASDQ"}
    done = subprocess.run([sys.executable, "-m", "market_pipeline.cli.ingest"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=240)  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert "MARKET_UNIVERSE (universe): exchange does not know 'NASDQ'" in done.stderr
    assert "Traceback" not in done.stderr


def ingest(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in (*ENV_VARS, "MARKET_UNIVERSE")}
    return subprocess.run([sys.executable, "-m", "market_pipeline.cli.ingest"], cwd=REPO,
                          env={**base, **env}, capture_output=True, text=True,
                          timeout=240)  # fmt: skip


def test_make_ingest_registers_and_loads_the_universe_beside_the_watchlist(
    stub: AlphaVantageStub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = DataHome(tmp_path / "d")
    env = {
        "ALPHAVANTAGE_API_KEY": "x", "ALPHAVANTAGE_BASE_URL": stub.url,
        "MARKET_SYMBOLS": "IBM", "MARKET_DATA_HOME": str(home.root),
        "ALPHAVANTAGE_REQUESTS_PER_SECOND": "0", "ALPHAVANTAGE_REQUESTS_PER_MINUTE": "0",
    }  # fmt: skip
    done = ingest(env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ingest: 1 symbols" in done.stdout, "unset: the watchlist alone, as before"

    universe = {**env, "MARKET_UNIVERSE": "exchange=NASDAQ;asset_type=Stock"}
    done = ingest(universe)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "the watchlist alone; the listings asset loads it" in done.stderr, "none loaded yet"
    assert stub.count(function="LISTING_STATUS") == 0, "make ingest fetches no listing"

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with DagsterInstance.from_config(str(home.dagster_home)) as instance:
        load_listing(instance)
    done = ingest(universe)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ingest: the watchlist and the universe" in done.stdout
    with DagsterInstance.from_config(str(home.dagster_home)) as instance:
        assert registered(instance) == ["IBM", "AAPL", *NASDAQ_STOCKS]
    assert {row[1] for row in table_rows(home)} == {"IBM", "AAPL", *NASDAQ_STOCKS}
