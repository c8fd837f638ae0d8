"""What the refresh policy and the ``unexplained_large_move`` check read: the days of large moves
in a symbol's clean bars, and the ex-dates of the actions we know of.

An action is known when its ex-date is in the stored ``corporate_actions`` table or in the
symbol's raw SPLITS/DIVIDENDS files (a row the table refused, say for a bad factor, still
explains a move on its day). The table is read through the store (the file or the lake). The
file is read through a read-only connection, which needs no write lock and so never makes the
API let go of the file; if a loader of another process holds it just then, the raw files alone
answer (they hold every event the table was loaded from).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Protocol

import polars as pl

from market_core.home import DataHome
from market_core.schema import DIVIDEND, SPLIT
from market_pipeline.actions.policy import unexplained
from market_pipeline.actions.rules import WIRE_NAMES
from market_pipeline.store.actions import stored_ex_dates_in_file

FOLDERS = {SPLIT: "splits", DIVIDEND: "dividends"}
LARGE_MOVE = "large_move"


def move_days(clean: pl.DataFrame) -> tuple[dt.date, ...]:
    """The days ``bars.rules`` flagged ``large_move`` in clean bars, ascending."""
    if clean.is_empty():
        return ()
    days = clean.filter(pl.col("flags").str.contains(LARGE_MOVE).fill_null(False))
    return tuple(sorted(days.get_column("timestamp").dt.date().to_list()))


def _raw_ex_dates(home: DataHome, symbol: str) -> set[dt.date]:
    days: set[dt.date] = set()
    for kind, folder in FOLDERS.items():
        path = home.raw_actions_file(symbol, folder)
        column = WIRE_NAMES[kind]["ex_date"]
        try:
            values = pl.read_parquet(path, columns=[column]).get_column(column)
        except (pl.exceptions.PolarsError, OSError):
            continue
        parsed = values.str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False).drop_nulls()
        days.update(parsed.to_list())
    return days


class ExDateStore(Protocol):
    """Where the stored actions are (``market_core.store.StoreWriter``)."""

    def stored_ex_dates(self, symbols: Sequence[str]) -> dict[str, set[dt.date]]: ...


def known_ex_dates(
    home: DataHome, symbols: Sequence[str], store: ExDateStore | None = None
) -> dict[str, set[dt.date]]:
    """Each symbol's known ex-dates (splits and dividends alike); the stored ones from
    ``store``, or from the data home's DuckDB file when no store is at hand."""
    if not symbols:
        return {}
    if store is None:
        stored = stored_ex_dates_in_file(home.duckdb_path, symbols)
    else:
        stored = store.stored_ex_dates(symbols)
    return {s: _raw_ex_dates(home, s) | stored.get(s, set()) for s in symbols}


def unexplained_by_symbol(
    home: DataHome, moves: Mapping[str, Sequence[dt.date]], store: ExDateStore | None = None
) -> dict[str, tuple[dt.date, ...]]:
    """Each symbol's large-move days that no known action explains; symbols without moves are
    not looked up (most have none)."""
    moving = [s for s, days in moves.items() if days]
    known = known_ex_dates(home, moving, store)
    return {s: unexplained(moves[s], known[s]) for s in moving}
