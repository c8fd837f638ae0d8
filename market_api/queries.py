"""The SQL: one function per question the API asks, every value a bound parameter.

Each function takes a cursor of the read-only connection (``db.Database`` hands one out) and
returns plain tuples, so DuckDB does the filtering, aggregation, ordering and date casting and
the caller only encodes. Date ranges are half-open on ``timestamp`` (``>= start``,
``< end + 1 day``): inclusive of the whole end date whatever the time of day, and plain
comparisons that DuckDB's zone maps can prune row groups with.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import cast

import duckdb

from market_api.schemas import BarRow, Interval
from market_core.schema import TABLE

InstrumentRow = tuple[str, date, date, int]
StatsRow = tuple[
    int, date | None, date | None, float | None, float | None, float | None, float | None
]

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

# 'week' truncates to the ISO week's Monday, 'month' to the calendar month's first day.
_BARS_SQL: dict[Interval, str] = {
    Interval.DAY: _DAILY_SQL,
    Interval.WEEK: _BUCKET_SQL.format(table=TABLE, range=_RANGE, unit="week"),
    Interval.MONTH: _BUCKET_SQL.format(table=TABLE, range=_RANGE, unit="month"),
}

_STATS_SQL = f"""
SELECT
    count(*),
    CAST(min(timestamp) AS DATE),
    CAST(max(timestamp) AS DATE),
    avg(close),
    min(low),
    max(high),
    arg_max(close, timestamp) / NULLIF(arg_min(close, timestamp), 0) - 1
FROM {TABLE}
WHERE {_RANGE}
"""

_INSTRUMENTS_SQL = f"""
SELECT symbol, CAST(min(timestamp) AS DATE), CAST(max(timestamp) AS DATE), count(*)
FROM {TABLE}
GROUP BY symbol
ORDER BY symbol
"""

_NEWEST_SQL = f"SELECT CAST(max(timestamp) AS DATE) FROM {TABLE}"

_EXISTS_SQL = f"SELECT EXISTS (SELECT 1 FROM {TABLE} WHERE symbol = $symbol)"


def bars(
    cur: duckdb.DuckDBPyConnection,
    symbol: str,
    interval: Interval,
    start: date | None,
    end: date | None,
    limit: int | None,
) -> list[BarRow]:
    """Bars of one symbol in ``[start, end]``, ascending; with ``limit``, only the newest N.

    Weekly and monthly buckets are built from the daily bars inside the range, so a bucket cut
    by ``start`` or ``end`` holds only the days inside it."""
    params = {**_range_params(symbol, start, end), "limit": limit}
    return cast(list[BarRow], cur.execute(_BARS_SQL[interval], params).fetchall())


def stats(
    cur: duckdb.DuckDBPyConnection, symbol: str, start: date | None, end: date | None
) -> StatsRow:
    """Count, first and last date, average close, min low, max high, total return."""
    row = cur.execute(_STATS_SQL, _range_params(symbol, start, end)).fetchone()
    return cast(StatsRow, row)


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


def _range_params(symbol: str, start: date | None, end: date | None) -> dict[str, object]:
    low = datetime.min if start is None else datetime.combine(start, time())
    high = (
        datetime.max
        if end is None or end == date.max
        else datetime.combine(end + timedelta(days=1), time())
    )
    return {"symbol": symbol, "low": low, "high": high}
