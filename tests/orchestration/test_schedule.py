"""The daily update's ticks, evaluated against a real instance and real runs."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from dagster import DagsterInstance, build_schedule_context, materialize

from market_core.home import DataHome
from market_pipeline.defs.automation import DEFERRED_TAG, TRIGGER_TAG, daily_update, plan_update
from market_pipeline.defs.daily import symbol_pipeline
from market_pipeline.defs.resources import resources_from_env
from market_pipeline.source.rate_limit import (
    DAY_MARGIN_MS,
    DAY_MAX_WAIT_SECONDS,
    day_rate,
    now_ms,
    window_stamps,
)
from tests.conftest import TEST_KEY, Run
from tests.orchestration.helpers import Tick, ranges
from tests.pipeline.helpers import spend, table_rows
from tests.stubs.alpha_vantage import AlphaVantageStub

NY = ZoneInfo("America/New_York")
TRADING_DAY = dt.datetime(2025, 3, 4, 18, 30, tzinfo=NY)  # a Tuesday
CHRISTMAS = dt.datetime(2025, 12, 25, 18, 30, tzinfo=NY)  # a Thursday
DAY_S = 86_400


def tick(
    instance: DagsterInstance, when: dt.datetime = TRADING_DAY, **alpha_vantage: object
) -> Tick:
    """One tick, with the resources the code location would give it (from this environment)."""
    resources = resources_from_env(**alpha_vantage)
    with build_schedule_context(
        instance=instance, scheduled_execution_time=when, resources=resources
    ) as context:
        return daily_update.evaluate_tick(context)


def test_without_a_quota_one_run_updates_every_registered_symbol(
    instance: DagsterInstance, home: DataHome
) -> None:
    instance.add_dynamic_partitions("symbols", ["AAPL", "MSFT", "IBM"])
    data = tick(instance)
    assert ranges(data.run_requests) == [("AAPL", "IBM")]
    [request] = data.run_requests or []
    assert request.tags[TRIGGER_TAG] == "daily_update" and request.tags[DEFERRED_TAG] == "0"

    resources = resources_from_env()  # this test's data home, not the import's
    assert materialize(
        [symbol_pipeline], instance=instance, resources=resources, tags=request.tags
    ).success
    assert {row[1] for row in table_rows(home)} == {"AAPL", "MSFT", "IBM"}


@pytest.fixture
def quota(keyed: AlphaVantageStub, monkeypatch: pytest.MonkeyPatch) -> AlphaVantageStub:
    monkeypatch.setenv("ALPHAVANTAGE_REQUESTS_PER_DAY", "7")
    return keyed


def test_short_quota_updates_the_stalest_first_and_says_so(
    quota: AlphaVantageStub,
    run: Run,
    instance: DagsterInstance,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ALPHAVANTAGE_REQUESTS_PER_DAY", "10")
    instance.add_dynamic_partitions("symbols", ["A", "B", "C", "D", "E", "F"])
    assert run(["A", "B"]).success  # first loads: 3 calls each, 6 of the 10 of the day
    assert quota.count() == 6 and quota.count("A", "SPLITS") == 1

    capfd.readouterr()
    data = tick(instance)
    # 4 calls left: the bars of C..F (never loaded) first; no call is left for their actions,
    # which wait, still due; A and B (updated longest ago) wait too.
    requests = data.run_requests or []
    assert ranges(requests) == [("C", "F")]
    assert {r.tags[DEFERRED_TAG] for r in requests} == {"2"}
    log = capfd.readouterr().err
    assert (
        "updating the 4 stalest of 6 symbols: only 4 calls left in the key's daily quota; "
        "2 wait for a later update (stalest first): A, B"
    ) in log, "the tick's log says what was left out and why"
    assert "corporate actions: 4 due, 0 fetched" in log
    assert "4 wait for calls (still due next time): C, D, E, F; 4 calls planned" in log


def test_the_plan_counts_three_calls_for_a_symbol_whose_actions_are_due(
    quota: AlphaVantageStub,
    run: Run,
    instance: DagsterInstance,
    capfd: pytest.CaptureFixture[str],
) -> None:
    instance.add_dynamic_partitions("symbols", ["A", "B", "C", "D", "E", "F"])
    assert run(["A", "B"], requests_per_day=16).success  # 6 calls; A and B: actions fresh
    capfd.readouterr()
    [request] = tick(instance, requests_per_day=16).run_requests or []
    # 10 left: the 6 symbols' bars, then 2 of the 4 due symbols' actions (2 calls each).
    assert ranges([request]) == [("A", "F")] and request.tags[DEFERRED_TAG] == "0"
    log = capfd.readouterr().err
    assert "updating all 6 symbols: 10 calls left today" in log
    assert "corporate actions: 4 due, 2 fetched" in log
    assert ": C, D; 2 wait for calls (still due next time): E, F; 10 calls planned" in log

    result = run(["A", "B", "C", "D", "E", "F"], requests_per_day=16)
    assert result.success, "the run fetches exactly what the plan counted"
    assert quota.count() == 16
    assert [quota.count(s, "SPLITS") for s in "ABCDEF"] == [1, 1, 1, 1, 0, 0]


def test_the_plan_puts_every_symbols_bars_before_any_actions() -> None:
    registered = ["A", "B", "C", "D"]
    stale = {"A": 4, "B": 3, "C": 2, "D": 1}  # D updated longest ago
    plan = plan_update(registered, stale, 5, ["C", "A", "B"])
    assert plan.symbols == ["A", "B", "C", "D"] and plan.deferred == []
    assert plan.actions == [] and plan.actions_deferred == ["C", "A", "B"]
    assert plan.calls == 4
    plan = plan_update(registered, stale, 8, ["C", "A", "B"])
    assert plan.actions == ["C", "A"] and plan.actions_deferred == ["B"] and plan.calls == 8
    plan = plan_update(registered, stale, 3, ["C", "A", "B"])
    assert plan.symbols == ["B", "C", "D"] and plan.deferred == ["A"]
    assert plan.actions == [] and plan.actions_deferred == ["C", "B"]
    plan = plan_update(registered, stale, None, ["C", "A"])
    assert plan.symbols == registered and plan.actions == ["C", "A"] and plan.calls == 8


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


def spend_yesterday(home: DataHome, per_day: int, *offsets_s: float) -> list[float]:
    """Yesterday's update: calls made 24 hours ago plus ``offsets_s``, in the key's real bucket."""
    start = now_ms() - DAY_S * 1000
    return spend(home, per_day, [start + int(offset * 1000) for offset in offsets_s])


def test_the_day_after_a_full_quota_day_updates_every_symbol(
    quota: AlphaVantageStub,
    instance: DagsterInstance,
    home: DataHome,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ALPHAVANTAGE_REQUESTS_PER_SECOND", "1")
    monkeypatch.setenv("ALPHAVANTAGE_REQUESTS_PER_MINUTE", "5")
    instance.add_dynamic_partitions("symbols", list("ABCDEFG"))
    # Yesterday's run began 20 s after its tick, paced by the same limits as today's: 1/s, then
    # the sixth call a minute (and the widened 10 %) after the first.
    spend_yesterday(home, 7, 20, 21.1, 22.2, 23.3, 24.4, 86, 87.1)
    in_window = window_stamps(home.state_dir, TEST_KEY, day_rate(7), now_ms())
    assert len(in_window) == 7, "right now, not one call of the quota is left"

    requests = tick(instance).run_requests or []
    assert ranges(requests) == [("A", "G")], "yesterday's calls free up ahead of today's"
    assert {r.tags[DEFERRED_TAG] for r in requests} == {"0"}


def test_calls_that_free_up_too_late_for_the_run_count_as_used(
    quota: AlphaVantageStub, instance: DagsterInstance, home: DataHome
) -> None:
    """Yesterday's run was held up (behind a backfill, say) for its last three calls."""
    instance.add_dynamic_partitions("symbols", list("ABCDEFG"))
    late = DAY_MAX_WAIT_SECONDS + 1  # they leave the window after today's run may wait for them
    spend_yesterday(home, 7, 20, 21, 22, 23, late, late, late)
    requests = tick(instance).run_requests or []
    assert ranges(requests) == [("A", "D")]
    assert {r.tags[DEFERRED_TAG] for r in requests} == {"3"}


def test_the_update_waits_for_yesterdays_calls_and_never_exceeds_the_quota(
    quota: AlphaVantageStub,
    instance: DagsterInstance,
    home: DataHome,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ALPHAVANTAGE_REQUESTS_PER_DAY", "3")
    instance.add_dynamic_partitions("symbols", ["A", "B", "C"])
    margin = DAY_MARGIN_MS / 1000  # the three leave the window 1, 1.5 and 2 s from now
    earlier = spend_yesterday(home, 3, 1 - margin, 1.5 - margin, 2 - margin)
    [request] = tick(instance).run_requests or []
    assert ranges([request]) == [("A", "C")]

    resources = resources_from_env()
    assert materialize(
        [symbol_pipeline], instance=instance, resources=resources, tags=request.tags
    ).success
    times = sorted(r.at for r in quota.requests)
    assert len(times) == 3
    # Never more than 3 calls in any 24 hours: the k-th new call a day after the k-th old one.
    assert all(new - old >= DAY_S for old, new in zip(earlier, times, strict=True))


def test_the_quota_plan_and_the_fetch_obey_the_same_resource_field(
    quota: AlphaVantageStub, run: Run, instance: DagsterInstance
) -> None:
    """A daily limit set on the resource (as in the launchpad) binds the run and the plan alike."""
    instance.add_dynamic_partitions("symbols", list("ABCDE"))
    assert ranges(tick(instance).run_requests) == [("A", "E")], "7 a day from the environment"
    planned = tick(instance, requests_per_day=3).run_requests or []
    assert ranges(planned) == [("A", "C")] and {r.tags[DEFERRED_TAG] for r in planned} == {"2"}

    result = run(["A", "B", "C", "D"], requests_per_day=3)
    assert not result.success and quota.count() == 3, "the fetch stopped at the same 3"
    [failure] = result.get_step_failure_events()
    error = failure.step_failure_data.error
    assert error is not None and "D: the configured daily limit" in error.message
    assert "ALPHAVANTAGE_REQUESTS_PER_DAY=3" in error.message
    spent = tick(instance, requests_per_day=3)
    assert spent.run_requests == [] and "daily quota is used up" in (spent.skip_message or "")
    left = tick(instance).run_requests or []
    assert {r.tags[DEFERRED_TAG] for r in left} == {"1"}, "the environment's 7 leave 4 calls"
