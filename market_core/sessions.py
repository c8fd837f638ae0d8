"""The NYSE session calendar (exchange-local wall-clock times), shared by the schedule, the
intraday sensor, intraday validation and the daily bars' session checks so they cannot disagree.

Closures and early closes both come from the ``holidays`` package's NYSE calendar (its public
and half-day categories). From 2000 to the end of next year it equals exchange_calendars' XNYS
session for session, early close for early close (tests/pipeline/test_calendar_xnys.py).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import lru_cache

import holidays
from holidays.constants import HALF_DAY

from market_core.exchange import EXCHANGE_TZ

REGULAR_OPEN = dt.time(9, 30)
REGULAR_CLOSE = dt.time(16, 0)
EARLY_CLOSE = dt.time(13, 0)
EARLY_CLOSE_BEFORE_1993 = dt.time(14, 0)
EXTENDED_OPEN = dt.time(4, 0)
"""Alpha Vantage's extended hours: pre-market from 04:00, post-market until 20:00."""
EXTENDED_CLOSE = dt.time(20, 0)
EXTENDED_EARLY_CLOSE = dt.time(17, 0)
"""On an early-close day the post-market ends four hours after the close, as on other days."""


@lru_cache(maxsize=64)
def _closed(year: int) -> dict[dt.date, str]:
    return dict(holidays.financial_holidays("NYSE", years=year).items())


@lru_cache(maxsize=64)
def _half_days(year: int) -> frozenset[dt.date]:
    return frozenset(holidays.financial_holidays("NYSE", years=year, categories=(HALF_DAY,)))


def exchange_holiday(day: dt.date) -> str | None:
    """The NYSE holiday's name if the exchange is closed that weekday, else ``None``."""
    return _closed(day.year).get(day)


def is_trading_day(day: dt.date) -> bool:
    return day.weekday() < 5 and exchange_holiday(day) is None


def is_early_close(day: dt.date) -> bool:
    """A trading day that closes early: at 13:00 since 1993, at 14:00 before."""
    return is_trading_day(day) and day in _half_days(day.year)


@dataclass(frozen=True)
class Session:
    """One day's trading hours, naive exchange-local: bars start at or after ``opens`` and
    before ``closes``."""

    day: dt.date
    opens: dt.datetime
    closes: dt.datetime

    @property
    def minutes(self) -> int:
        return int((self.closes - self.opens).total_seconds() // 60)

    def admits(self, bar_start: dt.datetime) -> bool:
        return self.opens <= bar_start < self.closes


def session(day: dt.date, *, extended: bool = False) -> Session | None:
    """The session of ``day``, or ``None`` when the exchange does not trade that day."""
    if not is_trading_day(day):
        return None
    early = is_early_close(day)
    if extended:
        opens, closes = EXTENDED_OPEN, EXTENDED_EARLY_CLOSE if early else EXTENDED_CLOSE
    elif early:
        opens, closes = REGULAR_OPEN, EARLY_CLOSE if day.year >= 1993 else EARLY_CLOSE_BEFORE_1993
    else:
        opens, closes = REGULAR_OPEN, REGULAR_CLOSE
    return Session(day, dt.datetime.combine(day, opens), dt.datetime.combine(day, closes))


def sessions_between(first: dt.date, last: dt.date) -> list[dt.date]:
    """Every day from ``first`` to ``last`` (both included) that the exchange trades, in order."""
    days = (first + dt.timedelta(days=n) for n in range((last - first).days + 1))
    return [day for day in days if is_trading_day(day)]


def exchange_time(moment: dt.datetime) -> dt.datetime:
    """``moment`` on the New York wall clock, naive (a naive ``moment`` is taken as that)."""
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(EXCHANGE_TZ).replace(tzinfo=None)


def previous_session(before: dt.date, *, extended: bool = False) -> Session:
    """The last session of a day before ``before``."""
    day = before - dt.timedelta(days=1)
    while (found := session(day, extended=extended)) is None:
        day -= dt.timedelta(days=1)
    return found


def next_session(after: dt.date, *, extended: bool = False) -> Session:
    """The first session of a day after ``after``."""
    day = after + dt.timedelta(days=1)
    while (found := session(day, extended=extended)) is None:
        day += dt.timedelta(days=1)
    return found
