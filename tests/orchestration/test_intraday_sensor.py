"""The intraday sensor's ticks against a real instance: session edges, one request per symbol
and slot, stalest first within the quota, and a remembered premium refusal."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from dagster import (
    DagsterInstance,
    DagsterRunStatus,
    SensorResult,
    SkipReason,
    build_resources,
    build_sensor_context,
    materialize,
)

from market_core.exchange import EXCHANGE_TZ
from market_pipeline.definitions import defs
from market_pipeline.defs.automation import TRIGGER_TAG
from market_pipeline.defs.intraday import intraday_pipeline
from market_pipeline.defs.intraday_sensor import (
    INTRADAY_JOB,
    SLOT_TAG,
    intraday_sensor,
    intraday_tick,
)
from market_pipeline.defs.resources import resources_from_env
from tests.conftest import TEST_KEY
from tests.orchestration.helpers import SensorTick, ranges
from tests.pipeline.helpers import failure_text
from tests.stubs.alpha_vantage import AlphaVantageStub

INTRADAY = "TIME_SERIES_INTRADAY"
SYMBOLS = ["AAA", "BBB", "CCC"]


def new_york(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=EXCHANGE_TZ)


def tick_at(
    instance: DagsterInstance, now: dt.datetime, cursor: str | None = None
) -> SkipReason | SensorResult:
    """The sensor's decision at ``now``, with its resources as the code location builds them."""
    with (
        build_resources(resources_from_env()) as resolved,
        build_sensor_context(instance=instance, cursor=cursor) as context,
    ):
        return intraday_tick(context, resolved.alpha_vantage, now)


def real_tick(instance: DagsterInstance) -> SensorTick:
    """The sensor as the daemon runs it, at the real time."""
    with build_sensor_context(instance=instance, resources=resources_from_env()) as context:
        return intraday_sensor.evaluate_tick(context)


def requested(result: SkipReason | SensorResult) -> list[tuple[str, str]]:
    assert isinstance(result, SensorResult), getattr(result, "skip_message", result)
    return ranges(result.run_requests)


def skipped(result: SkipReason | SensorResult) -> str:
    assert isinstance(result, SkipReason), result
    return result.skip_message or ""


def test_the_sensor_is_wired_to_the_intraday_job() -> None:
    assert defs().resolve_sensor_def("intraday").job_name == INTRADAY_JOB
    job = defs().resolve_job_def(INTRADAY_JOB)
    assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} == {
        "raw_intraday", "clean_intraday", "intraday_data"
    }  # fmt: skip


def test_with_the_interval_off_the_sensor_skips_saying_so(
    home: object, instance: DagsterInstance
) -> None:
    instance.add_dynamic_partitions("symbols", SYMBOLS)
    result = real_tick(instance)
    assert not result.run_requests
    assert "ALPHAVANTAGE_INTRADAY_INTERVAL is off" in (result.skip_message or "")


def test_each_symbol_once_per_slot_during_the_session(
    home: object, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALPHAVANTAGE_INTRADAY_INTERVAL", "5min")
    instance.add_dynamic_partitions("symbols", SYMBOLS)
    first = tick_at(instance, new_york("2024-11-08 10:02"))
    assert requested(first) == [("AAA", "CCC")]
    assert isinstance(first, SensorResult)
    [request] = first.run_requests or []
    assert request.tags[TRIGGER_TAG] == "intraday" and request.tags[SLOT_TAG] == "2024-11-08T10:00"

    same_slot = tick_at(instance, new_york("2024-11-08 10:04:59"), first.cursor)
    assert "all 3 symbols requested for the 5min slot at 10:00" in skipped(same_slot)
    assert requested(tick_at(instance, new_york("2024-11-08 10:05"), first.cursor)) == [
        ("AAA", "CCC")
    ]
    assert json.loads(first.cursor or "")["done"] == SYMBOLS


@pytest.mark.parametrize(
    ("moment", "says"),
    [
        ("2024-11-08 09:29", "before the session (09:30-16:00 New York)"),
        ("2024-11-08 16:05", "(09:30-16:00 New York) is over; next fetch at 2024-11-11 09:30"),
        (
            "2024-11-28 11:00",
            "NYSE closed (Thanksgiving Day), no intraday bars to fetch; next "
            "fetch at 2024-11-29 09:30",
        ),
        ("2024-11-09 11:00", "2024-11-09: a weekend"),
        (
            "2024-11-29 13:05",
            "(09:30-13:00 New York) (an early close) is over; next fetch at 2024-12-02 09:30",
        ),
    ],
)
def test_nothing_outside_the_session(
    home: object,
    instance: DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    moment: str,
    says: str,
) -> None:
    monkeypatch.setenv("ALPHAVANTAGE_INTRADAY_INTERVAL", "5min")
    instance.add_dynamic_partitions("symbols", SYMBOLS)
    assert says in skipped(tick_at(instance, new_york(moment)))


@pytest.mark.parametrize(
    "moment",
    ["2024-11-08 09:30", "2024-11-08 16:04", "2024-11-29 12:59", "2024-11-29 13:04"],
)
def test_the_open_and_one_interval_after_the_close_fetch(
    home: object, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch, moment: str
) -> None:
    """The slot after the close fetches the session's last bar, complete by then."""
    monkeypatch.setenv("ALPHAVANTAGE_INTRADAY_INTERVAL", "5min")
    instance.add_dynamic_partitions("symbols", SYMBOLS)
    assert requested(tick_at(instance, new_york(moment))) == [("AAA", "CCC")]


def test_extended_hours_widen_the_window(
    home: object, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALPHAVANTAGE_INTRADAY_INTERVAL", "60min")
    monkeypatch.setenv("ALPHAVANTAGE_INTRADAY_EXTENDED", "true")
    instance.add_dynamic_partitions("symbols", SYMBOLS)
    assert requested(tick_at(instance, new_york("2024-11-08 04:10"))) == [("AAA", "CCC")]
    assert "is over" in skipped(tick_at(instance, new_york("2024-11-08 21:00")))


def test_the_session_is_read_on_the_new_york_clock_across_dst(
    home: object, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALPHAVANTAGE_INTRADAY_INTERVAL", "1min")
    instance.add_dynamic_partitions("symbols", SYMBOLS)
    summer = tick_at(instance, dt.datetime(2024, 3, 11, 13, 31, tzinfo=dt.UTC))  # 09:31 EDT
    assert requested(summer) == [("AAA", "CCC")]
    winter = tick_at(instance, dt.datetime(2024, 1, 10, 13, 31, tzinfo=dt.UTC))  # 08:31 EST
    assert "before the session" in skipped(winter)


def test_stalest_first_within_the_quota(
    keyed: AlphaVantageStub, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALPHAVANTAGE_INTRADAY_INTERVAL", "1min")
    instance.add_dynamic_partitions("symbols", SYMBOLS)
    for symbol in ("AAA", "BBB"):  # CCC was never fetched; AAA before BBB
        run = materialize([intraday_pipeline], instance=instance, partition_key=symbol,
                          resources=resources_from_env())  # fmt: skip
        assert run.success, failure_text(run)
    monkeypatch.setenv("ALPHAVANTAGE_REQUESTS_PER_MINUTE", "1")  # 1 call per 1min slot
    first = tick_at(instance, new_york("2024-11-08 10:00"))
    assert requested(first) == [("CCC", "CCC")]
    assert isinstance(first, SensorResult)
    again = tick_at(instance, new_york("2024-11-08 10:00:30"), first.cursor)
    assert requested(again) == [("AAA", "AAA")], "the waiting symbols go next, stalest first"


def test_a_premium_refusal_is_shown_once_and_the_sensor_stops_calling(
    home: object, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    with AlphaVantageStub(premium_intraday=False) as free:
        monkeypatch.setenv("ALPHAVANTAGE_API_KEY", TEST_KEY)
        monkeypatch.setenv("ALPHAVANTAGE_BASE_URL", free.url)
        for scale in ("SECOND", "MINUTE", "DAY"):
            monkeypatch.setenv(f"ALPHAVANTAGE_REQUESTS_PER_{scale}", "0")
        monkeypatch.setenv("ALPHAVANTAGE_INTRADAY_INTERVAL", "5min")
        instance.add_dynamic_partitions("symbols", SYMBOLS)
        first = tick_at(instance, new_york("2024-11-08 10:02"))
        [request] = first.run_requests if isinstance(first, SensorResult) else []
        run = materialize([intraday_pipeline], instance=instance, resources=resources_from_env(),
                          tags=request.tags, raise_on_error=False)  # fmt: skip
        assert not run.success
        assert "This is a premium endpoint" in failure_text(run)
        assert free.count(function=INTRADAY) == 1

        for moment in ("2024-11-08 10:05", "2024-11-08 10:10"):
            later = skipped(tick_at(instance, new_york(moment), first.cursor))
            assert "refused TIME_SERIES_INTRADAY to this key" in later
            assert "premium endpoint" in later and "materialize raw_intraday by hand" in later
        daemon = real_tick(instance)
        assert not daemon.run_requests and "refused" in (daemon.skip_message or "")
        assert TEST_KEY not in (daemon.skip_message or "")
        assert free.count(function=INTRADAY) == 1, "no call while the refusal is remembered"

    monkeypatch.setenv("ALPHAVANTAGE_API_KEY", "ANOTHERKEY0123456789")  # e.g. a premium one
    assert requested(tick_at(instance, new_york("2024-11-08 10:15"))) == [("AAA", "CCC")]


def test_the_sensor_waits_for_an_unfinished_intraday_run(
    home: object, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALPHAVANTAGE_INTRADAY_INTERVAL", "5min")
    instance.add_dynamic_partitions("symbols", SYMBOLS)
    job = defs().resolve_job_def(INTRADAY_JOB)
    going = instance.create_run_for_job(job, status=DagsterRunStatus.STARTED)
    waiting = skipped(tick_at(instance, new_york("2024-11-08 10:02")))
    assert f"the intraday run {going.run_id} has not finished yet" in waiting
    instance.report_run_canceled(going)
    assert requested(tick_at(instance, new_york("2024-11-08 10:02"))) == [("AAA", "CCC")]


def test_no_registered_symbol_no_request(
    home: object, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALPHAVANTAGE_INTRADAY_INTERVAL", "5min")
    assert "no symbols registered" in skipped(tick_at(instance, new_york("2024-11-08 10:02")))
