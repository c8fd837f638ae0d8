"""The NYSE session calendar at its edges: weekends, holidays, early closes, DST, extended hours."""

from __future__ import annotations

import datetime as dt

import pytest

from market_core.sessions import (
    exchange_holiday,
    exchange_time,
    is_early_close,
    is_trading_day,
    next_session,
    previous_session,
    session,
)
from market_pipeline.defs import automation


def at(day: str, clock: str) -> dt.datetime:
    return dt.datetime.fromisoformat(f"{day} {clock}")


def test_a_regular_day_trades_0930_to_1600_and_admits_bars_starting_inside() -> None:
    friday = session(dt.date(2024, 11, 8))
    assert friday is not None
    assert (friday.opens, friday.closes) == (at("2024-11-08", "09:30"), at("2024-11-08", "16:00"))
    assert friday.minutes == 390
    assert friday.admits(at("2024-11-08", "09:30")) and friday.admits(at("2024-11-08", "15:59"))
    assert not friday.admits(at("2024-11-08", "09:29:59"))
    assert not friday.admits(at("2024-11-08", "16:00")), "a bar starting at the close is outside"


@pytest.mark.parametrize(
    ("day", "name"),
    [
        ("2024-11-28", "Thanksgiving"),
        ("2024-12-25", "Christmas"),
        ("2025-01-01", "New Year"),
        ("2024-03-29", "Good Friday"),
        ("2026-07-03", "Independence"),  # July 4 is a Saturday: the Friday is the holiday
        ("2021-12-24", "Christmas"),  # December 25 is a Saturday
    ],
)
def test_holidays_have_no_session(day: str, name: str) -> None:
    date = dt.date.fromisoformat(day)
    assert session(date) is None and session(date, extended=True) is None
    assert not is_trading_day(date)
    assert name.lower() in (exchange_holiday(date) or "").lower()


def test_weekends_have_no_session_and_no_holiday_name() -> None:
    saturday, sunday = dt.date(2024, 11, 9), dt.date(2024, 11, 10)
    assert session(saturday) is None and session(sunday) is None
    assert exchange_holiday(saturday) is None


@pytest.mark.parametrize("day", ["2024-11-29", "2024-07-03", "2024-12-24", "2025-07-03"])
def test_early_closes_end_at_1300(day: str) -> None:
    date = dt.date.fromisoformat(day)
    found = session(date)
    assert found is not None and is_early_close(date)
    assert found.closes == dt.datetime.combine(date, dt.time(13, 0))
    assert found.admits(dt.datetime.combine(date, dt.time(12, 55)))
    assert not found.admits(dt.datetime.combine(date, dt.time(13, 0)))


@pytest.mark.parametrize("day", ["2022-12-23", "2024-07-02", "2024-12-23", "2023-07-05"])
def test_the_days_around_are_full_sessions(day: str) -> None:
    """December 24, 2022 was a Saturday: the Friday before closed at 16:00."""
    date = dt.date.fromisoformat(day)
    found = session(date)
    assert found is not None and not is_early_close(date)
    assert found.closes.time() == dt.time(16, 0)


def test_extended_hours_run_0400_to_2000_and_1700_on_an_early_close() -> None:
    full = session(dt.date(2024, 11, 8), extended=True)
    early = session(dt.date(2024, 11, 29), extended=True)
    assert full is not None and early is not None
    assert (full.opens.time(), full.closes.time()) == (dt.time(4, 0), dt.time(20, 0))
    assert full.admits(at("2024-11-08", "04:00")) and full.admits(at("2024-11-08", "19:59"))
    assert not full.admits(at("2024-11-08", "03:59")) and not full.admits(at("2024-11-08", "20:00"))
    assert early.closes.time() == dt.time(17, 0)


def test_the_session_follows_the_new_york_clock_across_daylight_saving_time() -> None:
    """09:30 New York is 14:30 UTC in winter and 13:30 UTC in summer."""
    winter = exchange_time(dt.datetime(2024, 3, 8, 14, 30, tzinfo=dt.UTC))  # Friday, EST
    summer = exchange_time(dt.datetime(2024, 3, 11, 13, 30, tzinfo=dt.UTC))  # Monday, EDT
    assert winter == at("2024-03-08", "09:30") and summer == at("2024-03-11", "09:30")
    for moment in (winter, summer):
        found = session(moment.date())
        assert found is not None and found.opens == moment
    # November 4, 2024, the day after DST ended: 09:30 is 14:30 UTC again.
    assert exchange_time(dt.datetime(2024, 11, 4, 14, 30, tzinfo=dt.UTC)).time() == dt.time(9, 30)


def test_previous_and_next_session_skip_weekends_and_holidays() -> None:
    # Monday December 2, 2024: back over the weekend to the early close after Thanksgiving.
    before = previous_session(dt.date(2024, 12, 2))
    assert before.day == dt.date(2024, 11, 29) and before.closes.time() == dt.time(13, 0)
    assert previous_session(dt.date(2024, 11, 29)).day == dt.date(2024, 11, 27)
    assert next_session(dt.date(2024, 11, 27)).day == dt.date(2024, 11, 29)
    assert next_session(dt.date(2024, 12, 24), extended=True).day == dt.date(2024, 12, 26)


def test_the_daily_schedule_uses_the_same_calendar() -> None:
    assert automation.exchange_holiday is exchange_holiday
