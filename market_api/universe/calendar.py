"""The question of ``GET /calendar``: the NYSE sessions of a bounded range of days.

The sessions are ``market_core.sessions``', the calendar the pipeline checks the bars against
(equal to exchange_calendars' XNYS from 2000 to the end of next year). The range is bounded in
both its days and its length, so that an answer stays small and computed in milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from market_api.http.errors import InvalidParameter
from market_api.universe.schemas import Calendar, Session, json_encoder
from market_core.exchange import EXCHANGE_TZ
from market_core.sessions import session

FIRST_DAY = date(1970, 1, 1)
LAST_DAY = date(2099, 12, 31)
"""The days the calendar answers for: before 1970 the NYSE's rules differ from those the
``holidays`` package and ``market_core.sessions`` follow (Saturday sessions until 1952)."""
MAX_DAYS = 10_000
"""Most days from start to end, both included (about 27 years, ~6,900 sessions)."""
DEFAULT_DAYS = 366
"""The range's length when one end is left out: a year from start (or to end)."""


@dataclass(frozen=True, slots=True)
class CalendarQuestion:
    start: date
    end: date

    @classmethod
    def parse(cls, start: date | None, end: date | None, today: date) -> CalendarQuestion:
        """``start`` defaults to ``today`` (or a year before ``end``), ``end`` to a year after
        ``start``; each within ``FIRST_DAY``..``LAST_DAY``, in order, at most ``MAX_DAYS``."""
        for name, day in (("start", start), ("end", end)):
            if day is not None and not FIRST_DAY <= day <= LAST_DAY:
                raise InvalidParameter(
                    name, f"{name} {day} is outside the calendar: {FIRST_DAY} to {LAST_DAY}"
                )
        span = timedelta(days=DEFAULT_DAYS - 1)
        if start is None:
            start = today if end is None else max(FIRST_DAY, end - span)
        if end is None:
            end = min(LAST_DAY, start + span)
        if start > end:
            raise InvalidParameter("start", f"start {start} is after end {end}")
        days = (end - start).days + 1
        if days > MAX_DAYS:
            raise InvalidParameter(
                "end", f"start to end spans {days} days; at most {MAX_DAYS} per request"
            )
        return cls(start, end)

    def answer(self) -> bytes:
        sessions: list[Session] = []
        day = self.start
        while day <= self.end:
            found = session(day)
            if found is not None:
                sessions.append(Session(day, _aware(found.opens), _aware(found.closes)))
            day += timedelta(days=1)
        return json_encoder.encode(Calendar(sessions))


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=EXCHANGE_TZ)
