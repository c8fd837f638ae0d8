"""The DuckDB tables: the contract between the loader and every reader."""

from __future__ import annotations

TABLE = "ohlcv_data"

COLUMNS: tuple[str, ...] = ("timestamp", "symbol", "open", "high", "low", "close", "volume")

# The original design's table, unchanged: users' SQL and outside checks rely on it.
CREATE_TABLE_SQL = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    timestamp TIMESTAMP,
    symbol VARCHAR,
    open DOUBLE,
    high DOUBLE,
    low DOUBLE,
    close DOUBLE,
    volume BIGINT,
    UNIQUE (symbol, timestamp)
)
"""

ACTIONS_TABLE = "corporate_actions"

ACTIONS_COLUMNS: tuple[str, ...] = (
    "symbol", "ex_date", "kind", "split_factor", "amount",
    "declaration_date", "record_date", "payment_date",
)  # fmt: skip

SPLIT, DIVIDEND = "split", "dividend"
"""The two ``kind`` values. A split row has ``split_factor`` (new shares per old share, > 0;
below 1 for a reverse split) and null ``amount``; a dividend row has ``amount`` (cash per share,
>= 0, as Alpha Vantage reports it) and null ``split_factor``. Dates the vendor does not know
(its literal ``"None"``) are null."""

# One row per event, as announced; ohlcv_data is never rewritten for an event: adjusted prices
# are computed at read time.
CREATE_ACTIONS_SQL = f"""
CREATE TABLE IF NOT EXISTS {ACTIONS_TABLE} (
    symbol VARCHAR,
    ex_date DATE,
    kind VARCHAR,
    split_factor DOUBLE,
    amount DOUBLE,
    declaration_date DATE,
    record_date DATE,
    payment_date DATE,
    UNIQUE (symbol, ex_date, kind)
)
"""
