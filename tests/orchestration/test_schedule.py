"""The daily update's ticks, evaluated against a real instance and real runs."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from dagster import DagsterInstance, build_schedule_context, materialize
from dagster._core.definitions.schedule_definition import ScheduleExecutionData

from market_core.home import DataHome
from market_pipeline.assets import symbol_pipeline
from market_pipeline.automation import DEFERRED_TAG, TRIGGER_TAG, daily_update
from market_pipeline.definitions import build_resources
from market_pipeline.settings import Settings
from tests.conftest import Run
from tests.orchestration.helpers import ranges
from tests.pipeline.helpers import table_rows
from tests.stubs.alpha_vantage import AlphaVantageStub

NY = ZoneInfo("America/New_York")
TRADING_DAY = dt.datetime(2025, 3, 4, 18, 30, tzinfo=NY)  # a Tuesday
CHRISTMAS = dt.datetime(2025, 12, 25, 18, 30, tzinfo=NY)  # a Thursday


def tick(instance: DagsterInstance, when: dt.datetime = TRADING_DAY) -> ScheduleExecutionData:
    with build_schedule_context(instance=instance, scheduled_execution_time=when) as context:
        return daily_update.evaluate_tick(context)


def test_without_a_quota_one_run_updates_every_registered_symbol(
    instance: DagsterInstance, home: DataHome
) -> None:
    instance.add_dynamic_partitions("symbols", ["AAPL", "MSFT", "IBM"])
    data = tick(instance)
    assert ranges(data.run_requests) == [("AAPL", "IBM")]
    [request] = data.run_requests or []
    assert request.tags[TRIGGER_TAG] == "daily_update" and request.tags[DEFERRED_TAG] == "0"

    resources = build_resources(Settings.from_env())  # this test's data home, not the import's
    assert materialize(
        [symbol_pipeline], instance=instance, resources=resources, tags=request.tags
    ).success
    assert {row[1] for row in table_rows(home)} == {"AAPL", "MSFT", "IBM"}


@pytest.fixture
def quota(keyed: AlphaVantageStub, monkeypatch: pytest.MonkeyPatch) -> AlphaVantageStub:
    monkeypatch.setenv("ALPHAVANTAGE_REQUESTS_PER_DAY", "7")
    return keyed


def test_short_quota_updates_the_stalest_first_and_says_so(
    quota: AlphaVantageStub, run: Run, instance: DagsterInstance, capfd: pytest.CaptureFixture[str]
) -> None:
    instance.add_dynamic_partitions("symbols", ["A", "B", "C", "D", "E", "F"])
    assert run(["A", "B"]).success  # 2 of the 7 calls of the day
    assert run(["C", "D"]).success  # 2 more; E and F were never loaded
    assert quota.count() == 4

    capfd.readouterr()
    data = tick(instance)
    # 3 calls left: E and F (never loaded), then A (updated longest ago); B, C, D wait.
    requests = data.run_requests or []
    assert ranges(requests) == [("A", "A"), ("E", "F")]
    assert {r.tags[DEFERRED_TAG] for r in requests} == {"3"}
    assert len({r.run_key for r in requests}) == 2, "a schedule's requests need distinct keys"
    assert (
        "updating the 3 stalest of 6 symbols: only 3 calls left in the key's daily quota; "
        "3 wait for a later update (stalest first): B, C, D"
    ) in capfd.readouterr().err, "the tick's log says what was left out and why"


def test_spent_quota_skips_the_tick_with_the_reason(
    quota: AlphaVantageStub, run: Run, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALPHAVANTAGE_REQUESTS_PER_DAY", "2")
    assert run(["A", "B"]).success
    data = tick(instance)
    assert data.run_requests == []
    assert "daily quota is used up" in (data.skip_message or "")


def test_exchange_holidays_and_an_empty_registry_are_skipped(instance: DagsterInstance) -> None:
    assert "no symbols registered" in (tick(instance).skip_message or "")
    instance.add_dynamic_partitions("symbols", ["AAPL"])
    skipped = tick(instance, CHRISTMAS)
    assert skipped.run_requests == [] and "Christmas" in (skipped.skip_message or "")
    assert ranges(tick(instance, CHRISTMAS + dt.timedelta(days=1)).run_requests) == [
        ("AAPL", "AAPL")
    ]
