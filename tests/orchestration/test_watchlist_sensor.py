"""The watchlist sensor's ticks against a real instance: registration, first loads, removals."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import DagsterInstance, build_sensor_context, materialize

from market_core.home import DataHome
from market_pipeline.defs.automation import TRIGGER_TAG, watchlist_sensor
from market_pipeline.defs.daily import symbol_pipeline
from market_pipeline.defs.resources import resources_from_env
from tests.orchestration.helpers import SensorTick, apply_partition_requests, ranges
from tests.pipeline.helpers import table_rows
from tests.stubs.alpha_vantage import AlphaVantageStub


def tick(instance: DagsterInstance) -> SensorTick:
    """One sensor tick, applied to the instance the way the sensor daemon applies it."""
    with build_sensor_context(instance=instance, resources=resources_from_env()) as context:
        data = watchlist_sensor.evaluate_tick(context)
    apply_partition_requests(instance, data.dynamic_partitions_requests or [])
    return data


def test_new_symbols_are_registered_loaded_and_removed_ones_keep_their_data(
    instance: DagsterInstance, home: DataHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MARKET_SYMBOLS", "AAPL,msft")
    first = tick(instance)
    assert instance.get_dynamic_partitions("symbols") == ["AAPL", "MSFT"]
    assert ranges(first.run_requests) == [("AAPL", "MSFT")]
    request = (first.run_requests or [])[0]
    assert request.tags[TRIGGER_TAG] == "watchlist"
    resources = resources_from_env()
    assert materialize([symbol_pipeline], instance=instance, resources=resources,
                       tags=request.tags).success  # fmt: skip
    assert {row[1] for row in table_rows(home)} == {"AAPL", "MSFT"}

    unchanged = tick(instance)
    assert not unchanged.run_requests and "match the watchlist" in (unchanged.skip_message or "")

    monkeypatch.setenv("MARKET_SYMBOLS", "MSFT,NVDA")
    changed = tick(instance)
    assert instance.get_dynamic_partitions("symbols") == ["MSFT", "NVDA"]
    assert ranges(changed.run_requests) == [("NVDA", "NVDA")], "only the new one loads"
    assert {row[1] for row in table_rows(home)} == {"AAPL", "MSFT"}, "AAPL's rows stay"
    assert home.raw_file("AAPL").exists() and home.clean_file("AAPL").exists()


def test_first_loads_fit_the_quota_and_the_rest_wait_registered(
    keyed: AlphaVantageStub, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALPHAVANTAGE_REQUESTS_PER_DAY", "8")  # 3 calls per first load
    monkeypatch.setenv("MARKET_SYMBOLS", "AAA,BBB,CCC")
    result = tick(instance)
    assert instance.get_dynamic_partitions("symbols") == ["AAA", "BBB", "CCC"]
    assert ranges(result.run_requests) == [("AAA", "BBB")]


def test_an_emptied_watchlist_unregisters_nothing(
    instance: DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance.add_dynamic_partitions("symbols", ["AAPL", "MSFT"])
    watchlist = tmp_path / "watchlist.txt"
    watchlist.write_text("# nothing yet\n")
    monkeypatch.setenv("MARKET_WATCHLIST", str(watchlist))
    result = tick(instance)
    assert not result.run_requests and "watchlist is empty" in (result.skip_message or "")
    assert instance.get_dynamic_partitions("symbols") == ["AAPL", "MSFT"]

    watchlist.write_text("AAPL\nMSFT\nIBM\n")
    assert ranges(tick(instance).run_requests) == [("IBM", "IBM")]


def test_a_look_alike_symbol_fails_the_tick_naming_it_and_registers_nothing(
    instance: DagsterInstance, home: DataHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``str.upper()`` makes the sharp s "SS": the sensor must not register SSPY for it."""
    monkeypatch.setenv("MARKET_SYMBOLS", "AAPL,\u00dfpy")
    with pytest.raises(Exception, match="not a ticker symbol") as failed:
        tick(instance)
    assert repr("\u00dfpy") in str(failed.value)
    assert instance.get_dynamic_partitions("symbols") == []
