"""Our NYSE calendar (market_core.sessions) equals exchange_calendars' XNYS from 2000 to the end
of next year: every session, every special closing and every early close, with its times.

exchange_calendars is a dev requirement only: the product never imports it.
"""

from __future__ import annotations

import datetime as dt

import exchange_calendars as xcals
import pytest

from market_core.exchange import EXCHANGE_TZ
from market_core.sessions import is_early_close, session, sessions_between

FIRST = dt.date(2000, 1, 1)
LAST = dt.date(dt.date.today().year + 1, 12, 31)
SPECIAL_CLOSINGS = [
    "2001-09-11", "2001-09-12", "2001-09-13", "2001-09-14", "2004-06-11", "2007-01-02",
    "2012-10-29", "2012-10-30", "2018-12-05", "2025-01-09",
]  # fmt: skip


@pytest.fixture(scope="module")
def xnys() -> dict[dt.date, tuple[dt.datetime, dt.datetime]]:
    """XNYS's sessions, each with its open and close on the New York wall clock."""
    calendar = xcals.get_calendar("XNYS", start=FIRST.isoformat(), end=LAST.isoformat())
    opens = calendar.opens.dt.tz_convert(EXCHANGE_TZ).dt.tz_localize(None)
    closes = calendar.closes.dt.tz_convert(EXCHANGE_TZ).dt.tz_localize(None)
    return {
        day.date(): (opens[day].to_pydatetime(), closes[day].to_pydatetime())
        for day in calendar.sessions
    }


def test_every_session_and_its_hours_are_xnys(
    xnys: dict[dt.date, tuple[dt.datetime, dt.datetime]],
) -> None:
    ours = {}
    for day in sessions_between(FIRST, LAST):
        found = session(day)
        assert found is not None
        ours[day] = (found.opens, found.closes)
    assert len(ours) > 7000
    assert sorted(set(ours) ^ set(xnys)) == []
    assert {d: h for d, h in ours.items() if xnys[d] != h} == {}


def test_every_early_close_is_xnys_s(xnys: dict[dt.date, tuple[dt.datetime, dt.datetime]]) -> None:
    theirs = {d for d, (_, closes) in xnys.items() if closes.time() != dt.time(16)}
    ours = {d for d in sessions_between(FIRST, LAST) if is_early_close(d)}
    assert ours == theirs
    assert {dt.date(2002, 7, 5), dt.date(2003, 12, 26)} <= ours
    assert dt.date(2002, 7, 3) not in ours, "July 3, 2002 was a Wednesday: a full day"
    assert {xnys[d][1].time() for d in ours} == {dt.time(13, 0)}


@pytest.mark.parametrize("day", SPECIAL_CLOSINGS)
def test_special_closings_have_no_session(
    day: str, xnys: dict[dt.date, tuple[dt.datetime, dt.datetime]]
) -> None:
    date = dt.date.fromisoformat(day)
    assert date.weekday() < 5
    assert session(date) is None and date not in xnys
