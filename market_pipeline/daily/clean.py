"""Stage 2, ``clean_data``: typed, normalized, validated bars per symbol.

Reads the symbols' raw Parquet, applies ``bars.rules.validate_many`` to all of them at once and
writes each symbol's clean bars and rejects (each with the rule that rejected it) atomically. A
symbol is the unit of failure: a missing or unreadable raw file, a response with no valid bar
at all (the previous clean file stays in place) or a failed write fails that symbol alone.

Reads and writes run on a thread pool: polars and the file system release the GIL, and at a
few thousand rows per symbol a file's fixed costs, not its bytes, are what there is to overlap.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

import polars as pl

from market_core.exchange import exchange_today
from market_core.home import DataHome
from market_pipeline.bars.rules import (
    INPUT_COLUMNS,
    REJECT_COLUMNS,
    Rules,
    Validated,
    validate_many,
)
from market_pipeline.store.files import read_each, write_parquet_atomic

RAW_COLUMNS = [*INPUT_COLUMNS, "last_refreshed"]
T = TypeVar("T")


class CleanError(Exception):
    """The symbol has no readable raw file, or none of its bars is valid."""


SymbolError = CleanError | OSError
"""What fails one symbol of a batch and no other."""


@dataclass(frozen=True)
class CleanResult:
    symbol: str
    validated: Validated
    path: str
    rejects_path: str


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


def read_raw(home: DataHome, symbol: str) -> pl.DataFrame:
    """The columns validation needs, or ``CleanError`` if there is no readable raw file."""
    path = home.raw_file(symbol)
    if not path.exists():
        raise CleanError(f"{symbol}: no raw data yet; materialize raw_data for it first")
    try:
        return pl.read_parquet(path, columns=RAW_COLUMNS)
    except pl.exceptions.PolarsError as exc:
        raise CleanError(f"{symbol}: cannot read {path}: {exc}") from exc


def read_raws(
    home: DataHome, symbols: Sequence[str], pool: Executor
) -> dict[str, pl.DataFrame | SymbolError]:
    """Each symbol's raw frame, or its own failure (``files.read_each``)."""
    paths = {s: home.raw_file(s) for s in symbols}
    return read_each(paths, RAW_COLUMNS, partial(attempt, partial(read_raw, home)), pool.map)


def attempt(work: Callable[[str], T], symbol: str) -> T | SymbolError:
    """``work(symbol)``, with a symbol's own failure returned instead of raised."""
    try:
        return work(symbol)
    except (CleanError, OSError) as exc:
        return exc


def _no_valid_bar(symbol: str, raw: pl.DataFrame, result: Validated) -> CleanError:
    counts = ", ".join(f"{k}={v}" for k, v in sorted(result.reject_counts.items()))
    return CleanError(
        f"{symbol}: no valid bar in the latest response ({raw.height} rows; "
        f"rejected: {counts or 'none'}; outside MARKET_HISTORY_START: {result.filtered_out})"
    )


def _write(home: DataHome, symbol: str, result: Validated) -> CleanResult:
    clean_path, rejects_path = home.clean_file(symbol), home.rejects_file(symbol)
    write_parquet_atomic(result.clean, clean_path)
    write_parquet_atomic(result.rejects.select(REJECT_COLUMNS), rejects_path)
    return CleanResult(symbol, result, str(clean_path), str(rejects_path))


def clean_symbols(
    home: DataHome, symbols: Sequence[str], rules: Rules, pool: Executor
) -> dict[str, CleanResult | SymbolError]:
    """Each symbol's result or its own failure, in the order of ``symbols``."""
    outcomes: dict[str, CleanResult | SymbolError] = {}
    raws: dict[str, pl.DataFrame] = {}
    for symbol, read in read_raws(home, symbols, pool).items():
        if isinstance(read, pl.DataFrame):
            raws[symbol] = read
        else:
            outcomes[symbol] = read
    provisional = {symbol: provisional_date(raw) for symbol, raw in raws.items()}
    results = validate_many(raws, today=exchange_today(), rules=rules, provisional=provisional)
    writes = {}
    for symbol, result in results.items():
        if result.clean.is_empty():
            outcomes[symbol] = _no_valid_bar(symbol, raws[symbol], result)
        else:
            writes[symbol] = pool.submit(attempt, partial(_write, home, result=result), symbol)
    outcomes.update((symbol, future.result()) for symbol, future in writes.items())
    return {symbol: outcomes[symbol] for symbol in symbols}
