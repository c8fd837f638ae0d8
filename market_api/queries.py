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
outside the stored bars still adjust the bars before them. Set-based: each event gets the
cumulative factor of itself and every later event (a window product, newest first), and each
bar takes the one of the first event after it through an ASOF join; weekly and monthly bars
and the stats are then computed from the adjusted daily bars by the same SQL as from raw ones.
``raw`` runs the plain SQL, untouched by any of this.
"""

from __future__ import annotations

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

# S(t) per split: its factor times every later split's (a window over a handful of events,
# newest first), valid for every bar before its ex-date and after the previous split's.
_SPLIT_STEPS = f"""split_steps AS (
    SELECT
        CAST(ex_date AS TIMESTAMP) AS ex_at,
        product(split_factor) OVER (
            ORDER BY ex_date DESC ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
        ) AS s
    FROM {ACTIONS_TABLE}
    WHERE symbol = $symbol AND kind = '{SPLIT}'
)"""

# A dividend's factor uses the raw close of the last stored bar before its ex-date (an ASOF
# join on the symbol's whole history); the inner join drops a dividend with no such bar, so it
# adjusts nothing. D(t) per dividend is then cumulated like S(t).
_DIVIDEND_STEPS = f"""dividend_factors AS (
    SELECT CAST(a.ex_date AS TIMESTAMP) AS ex_at, 1 - a.amount / prior.close AS factor
    FROM {ACTIONS_TABLE} AS a
    ASOF JOIN (SELECT timestamp, close FROM {TABLE} WHERE symbol = $symbol) AS prior
        ON prior.timestamp < CAST(a.ex_date AS TIMESTAMP)
    WHERE a.symbol = $symbol AND a.kind = '{DIVIDEND}'
),
dividend_steps AS (
    SELECT
        ex_at,
        product(factor) OVER (
            ORDER BY ex_at DESC ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
        ) AS d
    FROM dividend_factors
)"""

_S = "coalesce(split_steps.s, 1.0)"
_D = "coalesce(dividend_steps.d, 1.0)"


def _adjusted_cte(adjustment: Adjustment, daily_limit: bool) -> str:
    """``WITH ... adjusted AS (...)``: the symbol's bars in the range, adjusted; with
    ``daily_limit`` only the newest ``$limit`` of them (the adjustment is per bar, so limiting
    first gives the same bars for less work)."""
    splits = adjustment in (Adjustment.SPLIT, Adjustment.ALL)
    dividends = adjustment in (Adjustment.DIVIDEND, Adjustment.ALL)

    def price(column: str) -> str:
        expr = f"days.{column}"
        if splits:
            expr = f"{expr} / {_S}"
        if dividends:
            expr = f"{expr} * {_D}"
        return f"{expr} AS {column}"

    steps, joins = [], []
    if splits:
        steps.append(_SPLIT_STEPS)
        joins.append("ASOF LEFT JOIN split_steps ON days.timestamp < split_steps.ex_at")
    if dividends:
        steps.append(_DIVIDEND_STEPS)
        joins.append("ASOF LEFT JOIN dividend_steps ON days.timestamp < dividend_steps.ex_at")
    volume = f"CAST(round_even(days.volume * {_S}, 0) AS BIGINT)" if splits else "days.volume"
    limit = "ORDER BY timestamp DESC LIMIT $limit" if daily_limit else ""
    prices = ", ".join(price(column) for column in ("open", "high", "low", "close"))
    step_sql = ",\n".join(steps)
    join_sql = "\n    ".join(joins)
    return f"""WITH days AS (
    SELECT timestamp, open, high, low, close, volume FROM {TABLE} WHERE {_RANGE} {limit}
),
{step_sql},
adjusted AS (
    SELECT days.timestamp, {prices}, {volume} AS volume
    FROM days
    {join_sql}
)"""


def _bars_sql(interval: Interval, adjustment: Adjustment) -> str:
    if interval is Interval.DAY:
        if adjustment is Adjustment.RAW:
            return _DAILY_SQL
        return _adjusted_cte(adjustment, daily_limit=True) + (
            "\nSELECT CAST(timestamp AS DATE) AS day, open, high, low, close, volume"
            "\nFROM adjusted\nORDER BY timestamp\n"
        )
    if adjustment is Adjustment.RAW:
        return _BUCKET_SQL.format(table=TABLE, range=_RANGE, unit=_UNITS[interval])
    buckets = _BUCKET_SQL.format(table="adjusted", range="true", unit=_UNITS[interval])
    return _adjusted_cte(adjustment, daily_limit=False) + buckets


def _stats_sql(adjustment: Adjustment) -> str:
    if adjustment is Adjustment.RAW:
        return _STATS_TEMPLATE.format(table=TABLE, range=_RANGE)
    summary = _STATS_TEMPLATE.format(table="adjusted", range="true")
    return _adjusted_cte(adjustment, daily_limit=False) + summary


_BARS_SQL: dict[tuple[Interval, Adjustment], str] = {
    (interval, adjustment): _bars_sql(interval, adjustment)
    for interval in Interval
    for adjustment in Adjustment
}
_STATS_SQL: dict[Adjustment, str] = {
    adjustment: _stats_sql(adjustment) for adjustment in Adjustment
}

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
) -> list[BarRow]:
    """Bars of one symbol in ``[start, end]``, ascending; with ``limit``, only the newest N.

    Weekly and monthly buckets are built from the (adjusted) daily bars inside the range, so a
    bucket cut by ``start`` or ``end`` holds only the days inside it."""
    params = {**_range_params(symbol, start, end), "limit": limit}
    sql = _BARS_SQL[(interval, adjustment)]
    return cast(list[BarRow], cur.execute(sql, params).fetchall())


def stats(
    cur: duckdb.DuckDBPyConnection,
    symbol: str,
    start: date | None,
    end: date | None,
    adjustment: Adjustment = Adjustment.RAW,
) -> StatsRow:
    """Count, first and last date, average close, min low, max high, total return."""
    row = cur.execute(_STATS_SQL[adjustment], _range_params(symbol, start, end)).fetchone()
    return cast(StatsRow, row)


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
