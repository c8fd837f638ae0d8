"""Stage 2, ``clean_data``: typed, normalized, validated bars per symbol.

Reads the symbol's raw Parquet, applies ``validation.validate`` and writes the clean bars and the
rejects (each with the rule that rejected it) atomically. A response with no valid bar at all
fails the symbol and leaves the previous clean file in place.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import polars as pl

from market_core.home import DataHome
from market_pipeline.resources.storage import write_parquet_atomic
from market_pipeline.validation import REJECT_COLUMNS, Rules, Validated, validate

EXCHANGE_TZ = ZoneInfo("America/New_York")


class CleanError(Exception):
    """The symbol has no raw file, or none of its bars is valid."""


@dataclass(frozen=True)
class CleanResult:
    symbol: str
    validated: Validated
    path: str
    rejects_path: str


def exchange_today() -> dt.date:
    return dt.datetime.now(EXCHANGE_TZ).date()


def provisional_date(raw: pl.DataFrame) -> dt.date | None:
    """The newest bar is a partial day when Last Refreshed carries a time of day."""
    refreshed = raw.get_column("last_refreshed").drop_nulls()
    if refreshed.is_empty():
        return None
    text = str(refreshed[0]).strip()
    if len(text) <= 10:
        return None
    try:
        return dt.date.fromisoformat(text[:10])
    except ValueError:
        return None


def clean_symbol(home: DataHome, symbol: str, rules: Rules) -> CleanResult:
    raw_path = home.raw_file(symbol)
    if not raw_path.exists():
        raise CleanError(f"{symbol}: no raw data yet; materialize raw_data for it first")
    raw = pl.read_parquet(raw_path)
    result = validate(
        raw, symbol, today=exchange_today(), rules=rules, provisional_date=provisional_date(raw)
    )
    if result.clean.is_empty():
        counts = ", ".join(f"{k}={v}" for k, v in sorted(result.reject_counts.items()))
        raise CleanError(
            f"{symbol}: no valid bar in the latest response ({raw.height} rows; "
            f"rejected: {counts or 'none'}; outside MARKET_HISTORY_START: {result.filtered_out})"
        )
    clean_path, rejects_path = home.clean_file(symbol), home.rejects_file(symbol)
    write_parquet_atomic(result.clean, clean_path)
    write_parquet_atomic(result.rejects.select(REJECT_COLUMNS), rejects_path)
    return CleanResult(symbol, result, str(clean_path), str(rejects_path))
