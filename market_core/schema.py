"""The ``ohlcv_data`` table: the contract between the loader and every reader."""

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
