"""The SQL: one function per question the API asks, every value a bound parameter.

Each function takes a cursor of the read-only connection (``db.Database`` hands one out) and
returns plain tuples, so DuckDB does the filtering, aggregation, ordering and date casting and
the caller only encodes. Date ranges are half-open on ``timestamp`` (``>= start``,
``< end + 1 day``): inclusive of the whole end date whatever the time of day, and plain
comparisons that DuckDB's zone maps can prune row groups with.

Adjusted prices (``Adjustment``) are computed here, at read time, from the raw bars and the
``corporate_actions`` table; nothing stored is ever rewritten. For a bar on day t:

* ``S(t)``: the product of the split factors of every split with ex-date > t.
* ``D(t)``: the product, over every dividend with ex-date > t, of ``1 - amount / close``,
  ``close`` being the raw close of the last stored bar before that ex-date (looked up in the
  symbol's whole stored history, not only the asked range, so an answer does not depend on
  its range). A dividend with no stored bar before its ex-date adjusts nothing.
* ``split``: open, high, low, close / S(t); volume * S(t). ``dividend``: prices * D(t), volume
  unchanged. ``all``: prices / S(t) * D(t); volume * S(t).

All in float64 without rounding, except the adjusted volume: ``volume * S(t)`` in float64,
rounded half to even (``round_even``) to an integer, so that it stays a share count. Events
outside the stored bars still adjust the bars before them.

In two steps. ``factor_steps``, set-based over the symbol's events: each ex-date gets S and D
of itself and every later ex-date (a window product, newest first), the dividend factors from
an ASOF join on the symbol's whole history. Those steps depend on the symbol and the data
version only, so the service computes them once per version (``service.FactorCache``; they
cost more than an answer). Each answer then binds them as list parameters and gives every bar
in its range the step of the first ex-date after it; weekly and monthly bars and the stats
come from those adjusted daily bars through the same SQL as from raw ones. ``raw``, and a
symbol without events, run the plain SQL.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import cast

import duckdb

from market_api.schemas import Adjustment, BarRow, Interval
from market_core.schema import ACTIONS_TABLE, DIVIDEND, SPLIT, TABLE

InstrumentRow = tuple[str, date, date, int]
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
_BUCKET_SQL = """
SELECT day, open, high, low, close, volume FROM (
    SELECT
        CAST(min(timestamp) AS DATE) AS day,
        arg_min(open, timestamp) AS open,
        max(high) AS high,
        min(low) AS low,
        arg_max(close, timestamp) AS close,
        CAST(sum(volume) AS BIGINT) AS volume
    FROM {table}
    WHERE {range}
    GROUP BY date_trunc('{unit}', timestamp)
    ORDER BY day DESC
    LIMIT $limit
) ORDER BY day
"""

_UNITS = {Interval.WEEK: "week", Interval.MONTH: "month"}
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

# Per ex-date (a split and a dividend may share one), S and D of that date and every later one:
# a window product, newest first. A dividend's factor uses the raw close of the last stored bar
# before its ex-date (an ASOF join on the symbol's whole history); with no such bar it is 1.
_STEPS_SQL = f"""
WITH events AS (
    SELECT
        CAST(a.ex_date AS TIMESTAMP) AS ex_at,
        CASE WHEN a.kind = '{SPLIT}' THEN a.split_factor ELSE 1.0 END AS s,
        CASE WHEN a.kind = '{DIVIDEND}' THEN coalesce(1 - a.amount / prior.close, 1.0)
             ELSE 1.0 END AS d
    FROM {ACTIONS_TABLE} AS a
    ASOF LEFT JOIN (SELECT timestamp, close FROM {TABLE} WHERE symbol = $symbol) AS prior
        ON prior.timestamp < CAST(a.ex_date AS TIMESTAMP)
    WHERE a.symbol = $symbol AND a.kind IN ('{SPLIT}', '{DIVIDEND}')
),
per_date AS (SELECT ex_at, product(s) AS s, product(d) AS d FROM events GROUP BY ex_at),
steps AS (
    SELECT ex_at, product(s) OVER later AS s, product(d) OVER later AS d
    FROM per_date
    WINDOW later AS (ORDER BY ex_at DESC ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
)
SELECT list(ex_at ORDER BY ex_at), list(s ORDER BY ex_at), list(d ORDER BY ex_at) FROM steps
"""


@dataclass(frozen=True, slots=True)
class FactorSteps:
    """One symbol's adjustment factors as steps, ascending by ex-date: a bar on day t takes
    ``s[k]`` and ``d[k]`` of the first ex-date after t (1 after the last one)."""

    ex_at: tuple[datetime, ...] = ()
    s: tuple[float, ...] = ()
    d: tuple[float, ...] = ()

    def within(self, low: datetime, high: datetime) -> FactorSteps:
        """The steps a bar in ``[low, high)`` can take: none at or before ``low``, and after
        ``high`` only the first (it carries every later one)."""
        first = bisect_right(self.ex_at, low)
        last = bisect_left(self.ex_at, high) + 1
        return FactorSteps(self.ex_at[first:last], self.s[first:last], self.d[first:last])

    def params(self, adjustment: Adjustment) -> dict[str, object]:
        ones = [1.0] * len(self.ex_at)
        splits = adjustment in (Adjustment.SPLIT, Adjustment.ALL)
        dividends = adjustment in (Adjustment.DIVIDEND, Adjustment.ALL)
        return {
            "ex_at": list(self.ex_at),
            "s": list(self.s) if splits else ones,
            "d": list(self.d) if dividends else ones,
        }


# The bars in the range (with ``daily_limit`` only the newest $limit: the adjustment is per bar,
# so limiting first gives the same bars for less work), each with the factors of the first
# step after it: k counts the ex-dates <= t, so k + 1 indexes the first one after (1-based;
# past the end the list gives NULL, i.e. 1).
_ADJUSTED_CTE = """WITH days AS (
    SELECT timestamp, open, high, low, close, volume FROM {table} WHERE {range} {limit}
),
indexed AS (
    SELECT *, len(list_filter($ex_at, lambda x: x <= timestamp)) + 1 AS k FROM days
),
factored AS (
    SELECT *, coalesce($s[k], 1.0) AS s, coalesce($d[k], 1.0) AS d FROM indexed
),
adjusted AS (
    SELECT
        timestamp,
        open / s * d AS open,
        high / s * d AS high,
        low / s * d AS low,
        close / s * d AS close,
        CAST(round_even(volume * s, 0) AS BIGINT) AS volume
    FROM factored
)"""


def _adjusted_cte(daily_limit: bool) -> str:
    limit = "ORDER BY timestamp DESC LIMIT $limit" if daily_limit else ""
    return _ADJUSTED_CTE.format(table=TABLE, range=_RANGE, limit=limit)


def _bars_sql(interval: Interval, adjusted: bool) -> str:
    if interval is Interval.DAY:
        if not adjusted:
            return _DAILY_SQL
        return _adjusted_cte(daily_limit=True) + (
            "\nSELECT CAST(timestamp AS DATE) AS day, open, high, low, close, volume"
            "\nFROM adjusted\nORDER BY timestamp\n"
        )
    if not adjusted:
        return _BUCKET_SQL.format(table=TABLE, range=_RANGE, unit=_UNITS[interval])
    buckets = _BUCKET_SQL.format(table="adjusted", range="true", unit=_UNITS[interval])
    return _adjusted_cte(daily_limit=False) + buckets


def _stats_sql(adjusted: bool) -> str:
    if not adjusted:
        return _STATS_TEMPLATE.format(table=TABLE, range=_RANGE)
    summary = _STATS_TEMPLATE.format(table="adjusted", range="true")
    return _adjusted_cte(daily_limit=False) + summary


_BARS_SQL: dict[tuple[Interval, bool], str] = {
    (interval, adjusted): _bars_sql(interval, adjusted)
    for interval in Interval
    for adjusted in (False, True)
}
_STATS_SQL: dict[bool, str] = {adjusted: _stats_sql(adjusted) for adjusted in (False, True)}

_ACTIONS_SQL = f"""
SELECT kind, ex_date, split_factor, amount, declaration_date, record_date, payment_date
FROM {ACTIONS_TABLE}
WHERE symbol = $symbol AND ex_date >= $first AND ex_date <= $last
ORDER BY ex_date, kind
"""

_INSTRUMENTS_SQL = f"""
SELECT symbol, CAST(min(timestamp) AS DATE), CAST(max(timestamp) AS DATE), count(*)
FROM {TABLE}
GROUP BY symbol
ORDER BY symbol
"""

_NEWEST_SQL = f"SELECT CAST(max(timestamp) AS DATE) FROM {TABLE}"

_EXISTS_SQL = f"SELECT EXISTS (SELECT 1 FROM {TABLE} WHERE symbol = $symbol)"

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
    steps: FactorSteps = FactorSteps(),
) -> list[BarRow]:
    """Bars of one symbol in ``[start, end]``, ascending; with ``limit``, only the newest N.

    Weekly and monthly buckets are built from the (adjusted) daily bars inside the range, so a
    bucket cut by ``start`` or ``end`` holds only the days inside it. Without steps every
    factor is 1, and the raw SQL gives the same numbers."""
    params: dict[str, object] = {**_range_params(symbol, start, end), "limit": limit}
    steps = steps.within(cast(datetime, params["low"]), cast(datetime, params["high"]))
    adjusted = adjustment is not Adjustment.RAW and bool(steps.ex_at)
    if adjusted:
        params.update(steps.params(adjustment))
    sql = _BARS_SQL[(interval, adjusted)]
    return cast(list[BarRow], cur.execute(sql, params).fetchall())


def stats(
    cur: duckdb.DuckDBPyConnection,
    symbol: str,
    start: date | None,
    end: date | None,
    adjustment: Adjustment = Adjustment.RAW,
    steps: FactorSteps = FactorSteps(),
) -> StatsRow:
    """Count, first and last date, average close, min low, max high, total return."""
    params = _range_params(symbol, start, end)
    steps = steps.within(cast(datetime, params["low"]), cast(datetime, params["high"]))
    adjusted = adjustment is not Adjustment.RAW and bool(steps.ex_at)
    if adjusted:
        params.update(steps.params(adjustment))
    row = cur.execute(_STATS_SQL[adjusted], params).fetchone()
    return cast(StatsRow, row)


def factor_steps(cur: duckdb.DuckDBPyConnection, symbol: str) -> FactorSteps:
    """The symbol's S and D as steps: what every adjusted answer of one data version shares."""
    row = cur.execute(_STEPS_SQL, {"symbol": symbol}).fetchone()
    if row is None or row[0] is None:
        return FactorSteps()
    return FactorSteps(tuple(row[0]), tuple(row[1]), tuple(row[2]))


def actions(
    cur: duckdb.DuckDBPyConnection, symbol: str, start: date | None, end: date | None
) -> list[ActionRow]:
    """One symbol's events with ``start <= ex_date <= end``, by ex-date."""
    params = {"symbol": symbol, "first": start or date.min, "last": end or date.max}
    return cast(list[ActionRow], cur.execute(_ACTIONS_SQL, params).fetchall())


def instruments(cur: duckdb.DuckDBPyConnection) -> list[InstrumentRow]:
    """Every symbol with its first and last date and its number of bars, by symbol."""
    return cast(list[InstrumentRow], cur.execute(_INSTRUMENTS_SQL).fetchall())


def newest_bar_date(cur: duckdb.DuckDBPyConnection) -> date | None:
    row = cur.execute(_NEWEST_SQL).fetchone()
    return None if row is None else cast(date | None, row[0])


def symbol_exists(cur: duckdb.DuckDBPyConnection, symbol: str) -> bool:
    """Tells an unknown symbol (404) from a known one with no bars in the range (200, empty)."""
    row = cur.execute(_EXISTS_SQL, {"symbol": symbol}).fetchone()
    return bool(row and row[0])


def symbol_known(cur: duckdb.DuckDBPyConnection, symbol: str) -> bool:
    """Bars or corporate actions stored: what the corporate-actions endpoint's 404 asks."""
    row = cur.execute(_KNOWN_SQL, {"symbol": symbol}).fetchone()
    return bool(row and row[0])


def _range_params(symbol: str, start: date | None, end: date | None) -> dict[str, object]:
    low = datetime.min if start is None else datetime.combine(start, time())
    high = (
        datetime.max
        if end is None or end == date.max
        else datetime.combine(end + timedelta(days=1), time())
    )
    return {"symbol": symbol, "low": low, "high": high}
