"""The SQL: one function per question, every value a bound parameter, plain tuples back.

Adjusted prices are computed at read time from the raw bars and ``corporate_actions``, nothing
stored is rewritten; the formula and why it is split into factor steps are in
docs/design/api-internals.md ("The SQL and the adjustments").
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from itertools import accumulate
from typing import cast

import duckdb
import pyarrow as pa

from market_api.bars.schemas import Adjustment, BarRow, Interval
from market_core.exchange import EXCHANGE_TZ
from market_core.listing_rules import applying_listing_sql
from market_core.schema import (
    ACTIONS_TABLE,
    DIVIDEND,
    INTRADAY_TABLE,
    SPLIT,
    TABLE,
)
from market_core.sessions import is_trading_day

InstrumentRow = tuple[
    str, date, date, int, str | None, str | None, str | None, str | None, date | None, int
]
"""symbol, first_date, last_date, bar_count, name, exchange, asset_type, status,
delisting_date, missing_sessions: ``schemas.Instrument``'s fields in order."""
StatsRow = tuple[
    int, date | None, date | None, float | None, float | None, float | None, float | None
]
ActionRow = tuple[str, date, float | None, float | None, date | None, date | None, date | None]
"""kind, ex_date, split_factor, amount, declaration_date, record_date, payment_date."""

_RANGE = "symbol = $symbol AND timestamp >= $low AND timestamp < $high"

_DAILY_SQL = f"""
SELECT day, open, high, low, close, volume FROM (
    SELECT CAST(timestamp AS DATE) AS day, open, high, low, close, volume
    FROM {TABLE}
    WHERE {_RANGE}
    ORDER BY timestamp DESC
    LIMIT $limit
) ORDER BY day
"""

# A bucket's open is the open of its first trading day, its close the close of its last; its
# timestamp is its first trading day (not the Monday or the 1st, which may be a holiday).
BUCKET_COLUMNS = """arg_min(open, timestamp) AS open,
        max(high) AS high,
        min(low) AS low,
        arg_max(close, timestamp) AS close,
        CAST(sum(volume) AS BIGINT) AS volume"""
"""A bucket's prices and volume from the daily bars in it (here and in ``bulk.py``)."""

_BUCKET_SQL = f"""
SELECT day, open, high, low, close, volume FROM (
    SELECT
        CAST(min(timestamp) AS DATE) AS day,
        {BUCKET_COLUMNS}
    FROM {{table}}
    WHERE {{range}}
    GROUP BY date_trunc('{{unit}}', timestamp)
    ORDER BY day DESC
    LIMIT $limit
) ORDER BY day
"""

UNITS = {Interval.WEEK: "week", Interval.MONTH: "month"}
"""'week' truncates to the ISO week's Monday, 'month' to the calendar month's first day."""

_STATS_TEMPLATE = """
SELECT
    count(*),
    CAST(min(timestamp) AS DATE),
    CAST(max(timestamp) AS DATE),
    avg(close),
    min(low),
    max(high),
    arg_max(close, timestamp) / NULLIF(arg_min(close, timestamp), 0) - 1
FROM {table}
WHERE {range}
"""

# Per symbol in [$first, $last] (a contiguous range, so zone maps prune the scan) and per
# ex-date (a split and a dividend may share one), the factor of that date alone. A dividend's
# factor uses the raw close of the last stored bar before its ex-date (an ASOF join on the
# symbol's whole history); with no such bar it is 1. ``FactorSteps.of`` then multiplies them
# newest first, in Python, so the same events always give bit-identical steps.
_STEPS_SQL = f"""
WITH events AS (
    SELECT
        a.symbol,
        CAST(a.ex_date AS TIMESTAMP) AS ex_at,
        CASE WHEN a.kind = '{SPLIT}' THEN a.split_factor ELSE 1.0 END AS s,
        CASE WHEN a.kind = '{DIVIDEND}' THEN coalesce(1 - a.amount / prior.close, 1.0)
             ELSE 1.0 END AS d
    FROM {ACTIONS_TABLE} AS a
    ASOF LEFT JOIN (
        SELECT symbol, timestamp, close FROM {TABLE}
        WHERE symbol >= $first AND symbol <= $last
    ) AS prior
        ON prior.symbol = a.symbol AND prior.timestamp < CAST(a.ex_date AS TIMESTAMP)
    WHERE a.symbol >= $first AND a.symbol <= $last AND a.kind IN ('{SPLIT}', '{DIVIDEND}')
),
per_date AS (
    SELECT symbol, ex_at, product(s) AS s, product(d) AS d FROM events GROUP BY symbol, ex_at
)
SELECT symbol, list(ex_at ORDER BY ex_at), list(s ORDER BY ex_at), list(d ORDER BY ex_at)
FROM per_date
GROUP BY symbol
"""

_ACTION_SYMBOLS_SQL = f"SELECT DISTINCT symbol FROM {ACTIONS_TABLE} ORDER BY symbol"

_EPOCH = datetime(1970, 1, 1)
_EPOCH_ORDINAL = _EPOCH.toordinal()
_MICROSECOND = timedelta(microseconds=1)
_DAY_US = 86_400_000_000


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // _MICROSECOND


@dataclass(frozen=True, slots=True)
class FactorSteps:
    """One symbol's adjustment factors as steps, ascending by ex-date: a bar on day t takes
    ``s[k]`` and ``d[k]`` of the first ex-date after t (1 after the last one).

    Held as typed arrays (ex-dates in microseconds since the epoch), 24 bytes a step, because
    the service keeps every symbol's steps in memory."""

    ex_us: array[int] = field(default_factory=lambda: array("q"))
    s: array[float] = field(default_factory=lambda: array("d"))
    d: array[float] = field(default_factory=lambda: array("d"))

    @classmethod
    def of(cls, ex_at: Sequence[datetime], s: Sequence[float], d: Sequence[float]) -> FactorSteps:
        """Steps from each ex-date's own factors: S and D of an ex-date are the products of
        its own and every later one's."""
        split, dividend = array("d", s), array("d", d)
        for k in range(len(split) - 2, -1, -1):
            split[k] *= split[k + 1]
            dividend[k] *= dividend[k + 1]
        return cls(array("q", map(_micros, ex_at)), split, dividend)

    def __bool__(self) -> bool:
        return bool(self.ex_us)

    def within(self, low: datetime, high: datetime) -> FactorSteps:
        """The steps a bar in ``[low, high)`` can take: none at or before ``low``, and after
        ``high`` only the first (it carries every later one)."""
        first = bisect_right(self.ex_us, _micros(low))
        last = bisect_left(self.ex_us, _micros(high)) + 1
        return FactorSteps(self.ex_us[first:last], self.s[first:last], self.d[first:last])

    def factors(self, adjustment: Adjustment) -> tuple[array[float], array[float]]:
        """S and D of each step as ``adjustment`` applies them (1 for the kind it leaves)."""
        ones = array("d", [1.0]) * len(self.ex_us)
        splits = adjustment in (Adjustment.SPLIT, Adjustment.ALL)
        dividends = adjustment in (Adjustment.DIVIDEND, Adjustment.ALL)
        return (self.s if splits else ones), (self.d if dividends else ones)

    def params(self, adjustment: Adjustment) -> dict[str, object]:
        split, dividend = self.factors(adjustment)
        return {
            "ex_at": [_EPOCH + us * _MICROSECOND for us in self.ex_us],
            "s": split.tolist(),
            "d": dividend.tolist(),
        }

    def apply(self, rows: Sequence[BarRow], adjustment: Adjustment) -> list[BarRow]:
        """Daily bars (ascending, as ``_DAILY_SQL`` gives them) adjusted by these steps.

        The formula of ``_ADJUSTED_CTE`` in Python: the same float64 operations in the same
        order (``open / s * d``; the volume ``volume * s`` rounded half to even), so each bar is
        bit-identical to the one the weekly and monthly buckets and the stats are built from in
        SQL. Daily bars are the most asked adjusted question, and for them this costs a third
        of binding the steps into the SQL (bench/README.md, ``api-miss``)."""
        ex_days = [date.fromordinal(_EPOCH_ORDINAL + us // _DAY_US) for us in self.ex_us]
        return self._apply(rows, adjustment, ex_days)

    def apply_intraday(self, rows: Sequence[BarRow], adjustment: Adjustment) -> list[BarRow]:
        """Intraday bars (ascending, timestamps naive exchange-local) adjusted by the factors
        of their day: an event takes effect at its ex-date's open, so a bar at or after the
        ex-date's midnight is past it, every bar of the day before is not."""
        ex_at = [_EPOCH + us * _MICROSECOND for us in self.ex_us]
        return self._apply(rows, adjustment, ex_at)

    def _apply(
        self, rows: Sequence[BarRow], adjustment: Adjustment, ex_points: Sequence[date]
    ) -> list[BarRow]:
        """``apply``'s loop over ``ex_points``, the ex-dates in the bars' timestamp type (a
        ``date`` and a ``datetime`` do not compare)."""
        factors = self.params(adjustment)
        split, dividend = cast(list[float], factors["s"]), cast(list[float], factors["d"])
        out: list[BarRow] = []
        k, steps = 0, len(ex_points)
        for day, o, h, low, c, volume in rows:
            while k < steps and ex_points[k] <= day:  # k: the first ex-date after the bar
                k += 1
            if k == steps:
                out.append((day, o, h, low, c, volume))
                continue
            s, d = split[k], dividend[k]
            out.append((day, o / s * d, h / s * d, low / s * d, c / s * d, round(volume * s)))
        return out


NO_STEPS = FactorSteps()
"""A symbol without events: every factor 1."""


ADJUSTED_COLUMNS = """open / s * d AS open,
        high / s * d AS high,
        low / s * d AS low,
        close / s * d AS close,
        CAST(round_even(volume * s, 0) AS BIGINT) AS volume"""
"""A bar's prices and volume adjusted by its factors ``s`` and ``d`` (here and in ``bulk.py``);
``FactorSteps.apply`` is the same formula in Python."""

# The bars in the range, each with the factors of the first step after it: k counts the
# ex-dates <= t, so k + 1 indexes the first one after (1-based; past the end the list gives
# NULL, i.e. 1). Weekly and monthly buckets and the stats are built from it; daily bars take
# the same formula in Python (``FactorSteps.apply``).
_ADJUSTED_CTE = f"""WITH days AS (
    SELECT timestamp, open, high, low, close, volume FROM {TABLE} WHERE {_RANGE}
),
indexed AS (
    SELECT *, len(list_filter($ex_at, lambda x: x <= timestamp)) + 1 AS k FROM days
),
factored AS (
    SELECT *, coalesce($s[k], 1.0) AS s, coalesce($d[k], 1.0) AS d FROM indexed
),
adjusted AS (
    SELECT timestamp, {ADJUSTED_COLUMNS} FROM factored
)"""


def _buckets_sql(interval: Interval, adjusted: bool) -> str:
    if not adjusted:
        return _BUCKET_SQL.format(table=TABLE, range=_RANGE, unit=UNITS[interval])
    return _ADJUSTED_CTE + _BUCKET_SQL.format(table="adjusted", range="true", unit=UNITS[interval])


def _stats_sql(adjusted: bool) -> str:
    if not adjusted:
        return _STATS_TEMPLATE.format(table=TABLE, range=_RANGE)
    return _ADJUSTED_CTE + _STATS_TEMPLATE.format(table="adjusted", range="true")


_BUCKETS_SQL: dict[tuple[Interval, bool], str] = {
    (interval, adjusted): _buckets_sql(interval, adjusted)
    for interval in UNITS
    for adjusted in (False, True)
}
_STATS_SQL: dict[bool, str] = {adjusted: _stats_sql(adjusted) for adjusted in (False, True)}

_ACTIONS_SQL = f"""
SELECT kind, ex_date, split_factor, amount, declaration_date, record_date, payment_date
FROM {ACTIONS_TABLE}
WHERE symbol = $symbol AND ex_date >= $first AND ex_date <= $last
ORDER BY ex_date, kind
"""

CALENDAR_VIEW = "api_nyse_calendar"
"""The name the NYSE calendar (``calendar_table``) is registered under, on the cursor."""

_LISTING_SQL = applying_listing_sql(
    ("symbol", "name", "exchange", "asset_type", "status", "ipo_date", "delisting_date")
)

# Per symbol: its span and bar count; the listing its bars belong to (the rule the pipeline's
# session checks share, market_core/listing_rules.py); and its missing sessions,
# counted, not listed: the sessions in [start, stop] from the calendar's running session number,
# less the bars on sessions in it (one per day: the table is unique on symbol and timestamp).
# Those are the bars on sessions, less those outside [start, stop], which only a listing that
# cuts the span (ipo_date after the first bar, delisting_date before the last) has: comparing
# every bar with its symbol's bounds cost 7x the plain join (bench: 1,000 symbols x 25 years).
_INSTRUMENTS_SQL = f"""
WITH spans AS (
    SELECT symbol, CAST(min(timestamp) AS DATE) AS first_bar,
           CAST(max(timestamp) AS DATE) AS last_bar, count(*) AS bar_count
    FROM {TABLE} GROUP BY symbol
),
listing AS ({_LISTING_SQL}),
bounds AS (
    SELECT s.symbol, s.first_bar, s.last_bar, s.bar_count, l.name, l.exchange, l.asset_type,
           l.status, l.delisting_date,
           greatest(s.first_bar, coalesce(l.ipo_date, s.first_bar)) AS start,
           least(s.last_bar, coalesce(l.delisting_date, s.last_bar)) AS stop
    FROM spans s LEFT JOIN listing l USING (symbol)
),
on_sessions AS (
    SELECT b.symbol, count(*) AS bars
    FROM {TABLE} b JOIN {CALENDAR_VIEW} c ON c.day = CAST(b.timestamp AS DATE)
    WHERE c.session
    GROUP BY b.symbol
),
cut AS (
    SELECT * FROM bounds WHERE start > first_bar OR stop < last_bar
),
outside AS (
    SELECT b.symbol, count(*) AS bars
    FROM {TABLE} b
    JOIN cut d ON d.symbol = b.symbol
    JOIN {CALENDAR_VIEW} c ON c.day = CAST(b.timestamp AS DATE)
    WHERE c.session AND (c.day < d.start OR c.day > d.stop)
    GROUP BY b.symbol
),
present AS (
    SELECT symbol, o.bars - coalesce(x.bars, 0) AS bars
    FROM on_sessions o LEFT JOIN outside x USING (symbol)
)
SELECT d.symbol, d.first_bar, d.last_bar, d.bar_count, d.name, d.exchange, d.asset_type,
       d.status, d.delisting_date,
       CASE WHEN d.start > d.stop THEN 0
            ELSE e.sessions_to - s.sessions_to + CAST(s.session AS INTEGER) - coalesce(p.bars, 0)
       END
FROM bounds d
LEFT JOIN {CALENDAR_VIEW} s ON s.day = d.start
LEFT JOIN {CALENDAR_VIEW} e ON e.day = d.stop
LEFT JOIN present p USING (symbol)
ORDER BY d.symbol
"""

_BAR_SPAN_SQL = f"SELECT CAST(min(timestamp) AS DATE), CAST(max(timestamp) AS DATE) FROM {TABLE}"

_NEWEST_SQL = f"SELECT CAST(max(timestamp) AS DATE) FROM {TABLE}"

_EXISTS_SQL = f"SELECT EXISTS (SELECT 1 FROM {TABLE} WHERE symbol = $symbol)"

# One interval's stored bars, each its own series; the range is half-open on ``timestamp`` like
# the daily one (``intraday_range`` makes an inclusive datetime end exclusive by 1 µs).
_INTRADAY_SQL = f"""
SELECT timestamp, open, high, low, close, volume FROM (
    SELECT timestamp, open, high, low, close, volume
    FROM {INTRADAY_TABLE}
    WHERE symbol = $symbol AND interval = $interval AND timestamp >= $low AND timestamp < $high
    ORDER BY timestamp DESC
    LIMIT $limit
) ORDER BY timestamp
"""

_INTRADAY_EXISTS_SQL = f"""
SELECT EXISTS (SELECT 1 FROM {TABLE} WHERE symbol = $symbol)
    OR EXISTS (SELECT 1 FROM {INTRADAY_TABLE} WHERE symbol = $symbol)
"""

_KNOWN_SQL = f"""
SELECT EXISTS (SELECT 1 FROM {TABLE} WHERE symbol = $symbol)
    OR EXISTS (SELECT 1 FROM {ACTIONS_TABLE} WHERE symbol = $symbol)
"""


def bars(
    cur: duckdb.DuckDBPyConnection,
    symbol: str,
    interval: Interval,
    start: date | None,
    end: date | None,
    limit: int | None,
    adjustment: Adjustment = Adjustment.RAW,
    steps: FactorSteps = NO_STEPS,
) -> list[BarRow]:
    """Bars of one symbol in ``[start, end]``, ascending; with ``limit``, only the newest N.

    Weekly and monthly buckets are built from the (adjusted) daily bars inside the range, so a
    bucket cut by ``start`` or ``end`` holds only the days inside it. Without steps every
    factor is 1, and the raw SQL gives the same numbers."""
    params: dict[str, object] = {**_range_params(symbol, start, end), "limit": limit}
    steps = steps.within(cast(datetime, params["low"]), cast(datetime, params["high"]))
    adjusted = adjustment is not Adjustment.RAW and bool(steps)
    if interval is Interval.DAY:
        rows = cast(list[BarRow], cur.execute(_DAILY_SQL, params).fetchall())
        return steps.apply(rows, adjustment) if adjusted else rows
    if adjusted:
        params.update(steps.params(adjustment))
    return cast(list[BarRow], cur.execute(_BUCKETS_SQL[(interval, adjusted)], params).fetchall())


def intraday_bars(
    cur: duckdb.DuckDBPyConnection,
    symbol: str,
    interval: Interval,
    low: datetime,
    high: datetime,
    limit: int | None,
    adjustment: Adjustment = Adjustment.RAW,
    steps: FactorSteps = NO_STEPS,
) -> list[BarRow]:
    """One interval's bars of one symbol with ``low <= timestamp < high`` (naive
    exchange-local), ascending; with ``limit``, only the newest N. Adjusted by the daily
    factor steps of each bar's day (``FactorSteps.apply_intraday``). The timestamps come back
    aware (``EXCHANGE_TZ``), so that the wire carries their offset."""
    params = {"symbol": symbol, "interval": interval.value, "low": low, "high": high,
              "limit": limit}  # fmt: skip
    rows = cast(list[BarRow], cur.execute(_INTRADAY_SQL, params).fetchall())
    steps = steps.within(low, high)
    if adjustment is not Adjustment.RAW and steps:
        rows = steps.apply_intraday(rows, adjustment)
    return [
        (cast(datetime, ts).replace(tzinfo=EXCHANGE_TZ), o, h, lo, c, v)
        for ts, o, h, lo, c, v in rows
    ]


def intraday_range(start: date | None, end: date | None) -> tuple[datetime, datetime]:
    """``[low, high)`` of an intraday question: a date ``start`` from its midnight, a date
    ``end`` through its last microsecond, a ``datetime`` exactly (an end inclusive)."""
    if start is None:
        low = datetime.min
    elif isinstance(start, datetime):
        low = start
    else:
        low = datetime.combine(start, time())
    if end is None:
        return low, datetime.max
    exact = end if isinstance(end, datetime) else datetime.combine(end, time.max)
    return low, datetime.max if exact >= datetime.max - _MICROSECOND else exact + _MICROSECOND


def stats(
    cur: duckdb.DuckDBPyConnection,
    symbol: str,
    start: date | None,
    end: date | None,
    adjustment: Adjustment = Adjustment.RAW,
    steps: FactorSteps = NO_STEPS,
) -> StatsRow:
    """Count, first and last date, average close, min low, max high, total return."""
    params = _range_params(symbol, start, end)
    steps = steps.within(cast(datetime, params["low"]), cast(datetime, params["high"]))
    adjusted = adjustment is not Adjustment.RAW and bool(steps)
    if adjusted:
        params.update(steps.params(adjustment))
    row = cur.execute(_STATS_SQL[adjusted], params).fetchone()
    return cast(StatsRow, row)


def factor_steps(cur: duckdb.DuckDBPyConnection, symbol: str) -> FactorSteps:
    """The symbol's S and D as steps: what every adjusted answer of one data version shares."""
    return factor_steps_between(cur, symbol, symbol).get(symbol, NO_STEPS)


def factor_steps_between(
    cur: duckdb.DuckDBPyConnection, first: str, last: str
) -> dict[str, FactorSteps]:
    """The steps of every symbol with events in ``[first, last]``, in one query."""
    rows = cur.execute(_STEPS_SQL, {"first": first, "last": last}).fetchall()
    return {symbol: FactorSteps.of(ex_at, s, d) for symbol, ex_at, s, d in rows}


def action_symbols(cur: duckdb.DuckDBPyConnection) -> list[str]:
    """Every symbol with corporate actions, sorted: what the steps of all symbols cover."""
    return [row[0] for row in cur.execute(_ACTION_SYMBOLS_SQL).fetchall()]


def actions(
    cur: duckdb.DuckDBPyConnection, symbol: str, start: date | None, end: date | None
) -> list[ActionRow]:
    """One symbol's events with ``start <= ex_date <= end``, by ex-date."""
    params = {"symbol": symbol, "first": start or date.min, "last": end or date.max}
    return cast(list[ActionRow], cur.execute(_ACTIONS_SQL, params).fetchall())


def instruments(cur: duckdb.DuckDBPyConnection) -> list[InstrumentRow]:
    """Every symbol with its first and last date, its number of bars, its listing and its
    missing sessions, by symbol: one pass over the bars, whatever the number of symbols."""
    first, last = cur.execute(_BAR_SPAN_SQL).fetchone() or (None, None)
    if first is None or last is None:
        return []
    cur.register(CALENDAR_VIEW, calendar_table(first, last))
    try:
        rows = cur.execute(_INSTRUMENTS_SQL).fetchall()
    finally:
        cur.unregister(CALENDAR_VIEW)
    return [(*row[:-1], int(row[-1])) for row in rows]


def calendar_table(first: date, last: date) -> pa.Table:
    """Every day from ``first`` to ``last``: whether the NYSE trades, and its running session
    number (sessions on or before it), so that a span's sessions are one subtraction."""
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    sessions = [is_trading_day(day) for day in days]
    return pa.table(
        {
            "day": pa.array(days, pa.date32()),
            "session": pa.array(sessions, pa.bool_()),
            "sessions_to": pa.array(accumulate(map(int, sessions)), pa.int64()),
        }
    )


def newest_bar_date(cur: duckdb.DuckDBPyConnection) -> date | None:
    row = cur.execute(_NEWEST_SQL).fetchone()
    return None if row is None else cast(date | None, row[0])


def symbol_exists(cur: duckdb.DuckDBPyConnection, symbol: str) -> bool:
    """Tells an unknown symbol (404) from a known one with no bars in the range (200, empty)."""
    row = cur.execute(_EXISTS_SQL, {"symbol": symbol}).fetchone()
    return bool(row and row[0])


def symbol_exists_intraday(cur: duckdb.DuckDBPyConnection, symbol: str) -> bool:
    """An intraday question's 404: a symbol with daily or intraday bars is known, and a range
    or an interval without bars is an empty series."""
    row = cur.execute(_INTRADAY_EXISTS_SQL, {"symbol": symbol}).fetchone()
    return bool(row and row[0])


def symbol_known(cur: duckdb.DuckDBPyConnection, symbol: str) -> bool:
    """Bars or corporate actions stored: what the corporate-actions endpoint's 404 asks."""
    row = cur.execute(_KNOWN_SQL, {"symbol": symbol}).fetchone()
    return bool(row and row[0])


def day_range(start: date | None, end: date | None) -> tuple[datetime, datetime]:
    """``[low, high)`` of a daily question: from ``start``'s midnight to the midnight after
    ``end`` (half-open, so every bar of the end date is in and zone maps can prune)."""
    low = datetime.min if start is None else datetime.combine(start, time())
    high = (
        datetime.max
        if end is None or end == date.max
        else datetime.combine(end + timedelta(days=1), time())
    )
    return low, high


def _range_params(symbol: str, start: date | None, end: date | None) -> dict[str, object]:
    low, high = day_range(start, end)
    return {"symbol": symbol, "low": low, "high": high}
