"""Stage 1, ``raw_data``: one Alpha Vantage response per symbol, kept as received.

Values stay strings exactly as the vendor sent them; columns record when and from where (never
the key) they were fetched. A response is written only after it passed the response-level checks
(an error body, an empty series, another symbol's series), so a bad answer never replaces the last
good file.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import polars as pl

from market_core.home import DataHome
from market_pipeline.source.client import AlphaVantageClient, Fetched, series_columns, text
from market_pipeline.source.wire import OutputSize
from market_pipeline.store.files import write_parquet_atomic

FIELDS = {"open": "1. open", "high": "2. high", "low": "3. low", "close": "4. close",
          "volume": "5. volume"}  # fmt: skip
RAW_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "symbol": pl.String,
    "date": pl.String,
    **dict.fromkeys(FIELDS, pl.String),
    "meta_symbol": pl.String,
    "last_refreshed": pl.String,
    "time_zone": pl.String,
    "outputsize": pl.String,
    "source": pl.String,
    "fetched_at": pl.Datetime("us", "UTC"),
}
# 100 trading days span about 140 calendar days: a compact answer bridges a gap shorter than this.
COMPACT_REACH = dt.timedelta(days=130)


@dataclass(frozen=True)
class RawResult:
    symbol: str
    rows: int
    first_date: str
    last_date: str
    outputsize: str
    source: str
    path: str


def raw_frame(fetched: Fetched) -> pl.DataFrame:
    meta, dates, values = series_columns(fetched.payload, fetched.series)
    n = len(dates)
    columns: dict[str, list[Any]] = {
        "symbol": [fetched.symbol] * n,
        "date": dates,
        **values,
        "meta_symbol": [text(meta.get("2. Symbol"))] * n,
        "last_refreshed": [text(meta.get("3. Last Refreshed"))] * n,
        "time_zone": [text(meta.get("5. Time Zone"))] * n,
        "outputsize": [fetched.outputsize] * n,
        "source": [fetched.source] * n,
        "fetched_at": [fetched.fetched_at] * n,
    }
    return pl.DataFrame(columns, schema=RAW_SCHEMA)


def stored_last_date(home: DataHome, symbol: str) -> dt.date | None:
    """Newest date in the symbol's current raw file, if it has one."""
    path = home.raw_file(symbol)
    if not path.exists():
        return None
    newest = pl.scan_parquet(path).select(pl.col("date").max()).collect().item()
    try:
        return dt.date.fromisoformat(newest) if newest else None
    except ValueError:
        return None


def choose_outputsize(
    configured: OutputSize, last_date: dt.date | None, full_refused: bool, today: dt.date
) -> str:
    """``auto``: full for a first load or a long gap, compact when 100 bars bridge the gap."""
    if configured == "compact" or full_refused:
        return "compact"
    if configured == "full":
        return "full"
    if last_date is not None and today - last_date <= COMPACT_REACH:
        return "compact"
    return "full"


def fetch_raw(
    client: AlphaVantageClient, home: DataHome, symbol: str, configured: OutputSize
) -> RawResult:
    full_refused = client.facts.full_refused() if client.facts is not None else False
    outputsize = choose_outputsize(
        configured, stored_last_date(home, symbol), full_refused, dt.date.today()
    )
    fetched = client.fetch_daily(symbol, outputsize)
    frame = raw_frame(fetched)
    path = home.raw_file(symbol)
    write_parquet_atomic(frame, path)
    dates = frame.get_column("date")
    return RawResult(
        symbol=symbol,
        rows=frame.height,
        first_date=str(dates.min()),
        last_date=str(dates.max()),
        outputsize=fetched.outputsize,
        source=fetched.source,
        path=str(path),
    )
