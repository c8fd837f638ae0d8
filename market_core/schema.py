"""The DuckDB tables: the contract between the loader and every reader."""

from __future__ import annotations

TABLE = "ohlcv_data"

COLUMNS: tuple[str, ...] = ("timestamp", "symbol", "open", "high", "low", "close", "volume")
BAR_VALUES: tuple[str, ...] = ("open", "high", "low", "close", "volume")
"""A bar's values: what an upsert replaces and the change log compares, in every bar table."""

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

INTRADAY_TABLE = "ohlcv_intraday"

INTRADAY_INTERVALS: tuple[str, ...] = ("1min", "5min", "15min", "30min", "60min")
"""Alpha Vantage's ``TIME_SERIES_INTRADAY`` intervals, spelled as it spells them."""

DAILY_INTERVAL = "1d"
"""The ``interval`` that names ``ohlcv_data``'s bars in the change log and the stream."""

INTRADAY_COLUMNS: tuple[str, ...] = (
    "timestamp", "symbol", "interval", "open", "high", "low", "close", "volume",
)  # fmt: skip

# ``timestamp`` is the bar's start in exchange-local time (America/New_York), naive, as
# Alpha Vantage reports it: the same convention as ohlcv_data's dates.
CREATE_INTRADAY_SQL = f"""
CREATE TABLE IF NOT EXISTS {INTRADAY_TABLE} (
    timestamp TIMESTAMP,
    symbol VARCHAR,
    interval VARCHAR,
    open DOUBLE,
    high DOUBLE,
    low DOUBLE,
    close DOUBLE,
    volume BIGINT,
    UNIQUE (symbol, interval, timestamp)
)
"""

CHANGES_TABLE = "bar_changes"
COMMITS_TABLE = "bar_commits"

# The change log the push stream reads: one row per bar a commit inserted or revised, with the
# values the commit gave it, in the same transaction as the bars. ``commit_id`` grows by one per
# commit that changed bars; ``bar_commits`` keeps every commit's id and time even after old
# changes are pruned, so a client's Last-Event-ID older than the oldest kept change is known to
# be too old. The values make the log self-contained: a stream reads a commit's events from
# this small table alone, never joining the big bar tables a load has just rewritten.
CREATE_CHANGES_SQL = f"""
CREATE TABLE IF NOT EXISTS {CHANGES_TABLE} (
    commit_id BIGINT,
    symbol VARCHAR,
    interval VARCHAR,
    timestamp TIMESTAMP,
    revised BOOLEAN,
    open DOUBLE,
    high DOUBLE,
    low DOUBLE,
    close DOUBLE,
    volume BIGINT
)
"""
CREATE_COMMITS_SQL = f"""
CREATE TABLE IF NOT EXISTS {COMMITS_TABLE} (
    commit_id BIGINT,
    committed_at TIMESTAMP WITH TIME ZONE
)
"""

LISTINGS_TABLE = "listings"

LISTINGS_COLUMNS: tuple[str, ...] = (
    "symbol", "name", "exchange", "asset_type", "ipo_date", "delisting_date", "status",
    "first_seen", "last_seen",
)  # fmt: skip
LISTINGS_KEY: tuple[str, ...] = ("symbol", "ipo_date")
"""A ticker reused by a later company is a second row: the IPO date tells the two apart."""

LISTING_STATUSES: tuple[str, ...] = ("active", "delisted")
"""``status`` as stored (Alpha Vantage's ``Active``/``Delisted``, lower-cased): the words
``MARKET_UNIVERSE`` and the API's ``status`` filter use."""
LISTING_ASSET_TYPES: tuple[str, ...] = ("Stock", "ETF")
"""``asset_type`` as Alpha Vantage spells it: units, warrants, rights and preferred shares are
all ``Stock``."""

# Alpha Vantage's LISTING_STATUS, one row per listing ever seen. ``first_seen``/``last_seen``:
# the New York dates of the first and the latest answer that listed it, so a listing that
# vanished from the vendor's answers stays, with the day it was last seen.
CREATE_LISTINGS_SQL = f"""
CREATE TABLE IF NOT EXISTS {LISTINGS_TABLE} (
    symbol VARCHAR,
    name VARCHAR,
    exchange VARCHAR,
    asset_type VARCHAR,
    ipo_date DATE,
    delisting_date DATE,
    status VARCHAR,
    first_seen DATE,
    last_seen DATE,
    UNIQUE ({", ".join(LISTINGS_KEY)})
)
"""

TABLES: dict[str, str] = {
    TABLE: CREATE_TABLE_SQL,
    ACTIONS_TABLE: CREATE_ACTIONS_SQL,
    INTRADAY_TABLE: CREATE_INTRADAY_SQL,
    CHANGES_TABLE: CREATE_CHANGES_SQL,
    COMMITS_TABLE: CREATE_COMMITS_SQL,
    LISTINGS_TABLE: CREATE_LISTINGS_SQL,
}
"""Every table of a store, with its schema: the file's, the lake's (minus UNIQUE), the API's."""
