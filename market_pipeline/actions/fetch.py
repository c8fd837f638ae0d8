"""Stage ``raw_actions``: a symbol's SPLITS and DIVIDENDS answers, kept as received.

Like ``raw_data``: every value stays the string the vendor sent, plus where from (never the key)
and when. The two files are written only once both answers passed the response checks, so a bad
answer never replaces the last good pair, and the pair always comes from one refresh. An answer
without events (``"data": []``) is written too, with no rows: it records that the symbol was
checked. Its time is kept in the file's Parquet metadata, since a file without rows has no
``fetched_at`` value to read.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from market_core.atomic import write_atomic
from market_core.home import DataHome
from market_pipeline.source.client import (
    ActionsFunction,
    AlphaVantageClient,
    FetchedActions,
)

FIELDS: dict[ActionsFunction, tuple[str, ...]] = {
    "SPLITS": ("effective_date", "split_factor"),
    "DIVIDENDS": (
        "ex_dividend_date", "declaration_date", "record_date", "payment_date", "amount",
    ),
}  # fmt: skip
"""The fields Alpha Vantage sends per event; a file has them even when the answer has no rows.
A field the vendor adds later is kept too, as one more string column."""
CONTEXT_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "symbol": pl.String,
    "source": pl.String,
    "fetched_at": pl.Datetime("us", "UTC"),
}
FETCHED_AT_KEY = "fetched_at"


@dataclass(frozen=True)
class RawActionsResult:
    symbol: str
    splits: int
    dividends: int
    paths: tuple[str, str]
    """The splits file, then the dividends file."""
    source: str
    """Both URLs asked (without the key), comma-separated."""


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def actions_frame(fetched: FetchedActions) -> pl.DataFrame:
    """The answer's rows in the order received, every field a string (or null if absent)."""
    known = FIELDS[fetched.function]
    rows = [row if isinstance(row, Mapping) else {} for row in fetched.rows]
    extra = sorted({k for row in rows for k in row} - set(known) - set(CONTEXT_SCHEMA))
    n = len(rows)
    columns: dict[str, list[Any]] = {
        name: [_text(row.get(name)) for row in rows] for name in (*known, *extra)
    }
    columns |= {
        "symbol": [fetched.symbol] * n,
        "source": [fetched.source] * n,
        "fetched_at": [fetched.fetched_at] * n,
    }
    schema = {**dict.fromkeys((*known, *extra), pl.String), **CONTEXT_SCHEMA}
    return pl.DataFrame(columns, schema=schema)


def _write(frame: pl.DataFrame, path: Path, fetched_at: dt.datetime) -> None:
    """``write_parquet_atomic``'s write (same codec), plus the fetch time in the metadata."""
    stamp = fetched_at.astimezone(dt.UTC).isoformat()
    write_atomic(
        path,
        lambda tmp: frame.write_parquet(
            tmp,
            compression="zstd",
            compression_level=1,
            statistics=True,
            metadata={FETCHED_AT_KEY: stamp},
        ),
    )


def fetch_raw_actions(client: AlphaVantageClient, home: DataHome, symbol: str) -> RawActionsResult:
    """Two calls (SPLITS, then DIVIDENDS); either failing raises and writes nothing."""
    answers = [client.fetch_actions(symbol, "SPLITS"), client.fetch_actions(symbol, "DIVIDENDS")]
    frames = [actions_frame(fetched) for fetched in answers]
    paths = tuple(home.raw_actions_file(symbol, f.function.lower()) for f in answers)
    for frame, path, fetched in zip(frames, paths, answers, strict=True):
        _write(frame, path, fetched.fetched_at)
    splits, dividends = frames
    return RawActionsResult(
        symbol=symbol,
        splits=splits.height,
        dividends=dividends.height,
        paths=(str(paths[0]), str(paths[1])),
        source=", ".join(f.source for f in answers),
    )


def _fetched_at(path: Path) -> dt.datetime | None:
    try:
        stamp = pl.read_parquet_metadata(path).get(FETCHED_AT_KEY)
        if stamp:
            return dt.datetime.fromisoformat(stamp).astimezone(dt.UTC)
        oldest = pl.scan_parquet(path).select(pl.col("fetched_at").min()).collect().item()
    except (FileNotFoundError, ValueError, pl.exceptions.PolarsError, OSError):
        return None
    return oldest.astimezone(dt.UTC) if isinstance(oldest, dt.datetime) else None


def last_actions_fetch(home: DataHome, symbol: str) -> dt.datetime | None:
    """When both of the symbol's answers were last fetched (UTC), or None: never, or a file is
    missing or unreadable, so the next run should fetch them again."""
    times = [_fetched_at(home.raw_actions_file(symbol, name)) for name in ("splits", "dividends")]
    if any(t is None for t in times):
        return None
    return min(t for t in times if t is not None)
