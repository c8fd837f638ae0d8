"""When a symbol's corporate actions are fetched again, as pure functions (the caller passes the
files' facts and the clock in): two calls each out of the bars' quota, so first load, weekly,
and at once for an unexplained large move. The rules: docs/design/pipeline-internals.md.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

REFRESH_AFTER = dt.timedelta(days=7)
PRICE_CALLS = 1
"""``TIME_SERIES_DAILY``: one call per symbol and update."""
ACTIONS_CALLS = 2
"""``SPLITS`` and ``DIVIDENDS``: two calls per symbol and refresh."""


class Why(enum.IntEnum):
    """Why a symbol's actions are due, most urgent first (the order a short quota serves)."""

    UNEXPLAINED_MOVE = 0
    FIRST_LOAD = 1
    WEEKLY = 2
    ASKED = 3
    """``raw_actions`` was selected without ``raw_data`` (from the UI, a backfill): a person
    asked for these actions now, so the age of the last fetch does not matter."""


@dataclass(frozen=True)
class Due:
    """One symbol's actions are to be fetched in this run; ``detail`` says why, for the UI."""

    symbol: str
    why: Why
    detail: str
    last_fetch: dt.datetime | None


def unexplained(moves: Iterable[dt.date], known: Collection[dt.date]) -> tuple[dt.date, ...]:
    """The large-move days, ascending, that no known action's ex-date explains."""
    return tuple(sorted({day for day in moves if day not in known}))


def fetched_before(last_fetch: dt.datetime, day: dt.date) -> bool:
    """Whether a fetch at ``last_fetch`` (UTC) may not have known of an action on ``day``.

    A fetch on the day itself counts as before (it may have run before the close), so the
    refresh happens at most once more after the move."""
    return last_fetch.astimezone(dt.UTC).date() <= day


def actions_due(
    symbol: str,
    last_fetch: dt.datetime | None,
    now: dt.datetime,
    unexplained_moves: Sequence[dt.date] = (),
) -> Due | None:
    """Whether ``symbol``'s actions are due at ``now`` (aware), and why; ``None``: not due."""
    if last_fetch is None:
        return Due(symbol, Why.FIRST_LOAD, "first load: never fetched", None)
    newer = [day for day in unexplained_moves if fetched_before(last_fetch, day)]
    if newer:
        days = ", ".join(day.isoformat() for day in newer)
        return Due(
            symbol,
            Why.UNEXPLAINED_MOVE,
            f"large move on {days} that no known action explains (last fetched "
            f"{last_fetch:%Y-%m-%d %H:%M} UTC)",
            last_fetch,
        )
    age = now - last_fetch
    if age >= REFRESH_AFTER:
        return Due(
            symbol,
            Why.WEEKLY,
            f"weekly refresh: last fetched {last_fetch:%Y-%m-%d %H:%M} UTC, {age.days} days ago",
            last_fetch,
        )
    return None


def due_symbols(
    symbols: Sequence[str],
    last_fetch: Mapping[str, dt.datetime | None],
    now: dt.datetime,
    unexplained_moves: Mapping[str, Sequence[dt.date]] | None = None,
) -> list[Due]:
    """The symbols whose actions are due, most urgent first: unexplained moves, first loads,
    then the weekly refreshes, oldest fetch first; ties keep the order of ``symbols``."""
    moves = unexplained_moves or {}
    position = {symbol: i for i, symbol in enumerate(symbols)}
    dues = [
        due
        for symbol in symbols
        if (due := actions_due(symbol, last_fetch.get(symbol), now, moves.get(symbol, ())))
        is not None
    ]
    oldest = dt.datetime.min.replace(tzinfo=dt.UTC)
    return sorted(dues, key=lambda d: (d.why, d.last_fetch or oldest, position[d.symbol]))


def asked(symbols: Sequence[str], last_fetch: Mapping[str, dt.datetime | None]) -> list[Due]:
    """Every symbol, in order: a run that fetches actions without the bars was asked for them."""
    return [
        Due(s, Why.ASKED, "asked for: raw_actions materialized without raw_data", last_fetch.get(s))
        for s in symbols
    ]


def affordable(calls_left: int | None, due: int) -> int:
    """How many of ``due`` symbols' actions the calls left allow (``None``: no daily quota)."""
    if calls_left is None:
        return due
    return max(0, min(due, calls_left // ACTIONS_CALLS))
