"""The validate step of ``corporate_actions``: the raw_actions answers, checked, per symbol.

Reads each symbol's SPLITS and DIVIDENDS files, validates all symbols in one query
(``actions.rules``) and writes each symbol's rejects atomically, also when there are none,
so the rejects file always describes the latest answer. A symbol is the unit of failure: missing
or unreadable files, or a failed write, fail that symbol alone. Loading the events is
``StoreWriter.load_actions``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from market_core.home import DataHome
from market_pipeline.actions.rules import (
    REJECT_COLUMNS,
    RawActions,
    ValidatedActions,
    validate_actions_many,
)
from market_pipeline.store.files import write_parquet_atomic

FUNCTIONS = ("splits", "dividends")
"""The raw_actions folders, one per Alpha Vantage function."""


class ActionsError(Exception):
    """The symbol's corporate actions could not be read or its rejects not written."""


@dataclass(frozen=True)
class ActionsResult:
    """One symbol's validated answer: what ``StoreWriter.load_actions`` takes
    (``market_core.store.SymbolActions``) and what the run's metadata reports."""

    symbol: str
    events: pl.DataFrame
    rejects: pl.DataFrame
    reject_counts: dict[str, int]
    complete_kinds: frozenset[str]


def _read(path: Path, symbol: str) -> pl.DataFrame:
    try:
        return pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise ActionsError(f"{symbol}: cannot read {path}: {exc}") from exc


def read_raw_actions(home: DataHome, symbol: str) -> RawActions:
    """Both answers of ``symbol``, or ``ActionsError`` naming what is missing.

    Each file is read whole: a column the vendor left out reads as null in validation, which
    then rejects the rows with the rule they break instead of failing the symbol."""
    paths = {f: home.raw_actions_file(symbol, f) for f in FUNCTIONS}
    missing = [str(p) for p in paths.values() if not p.exists()]
    if missing:
        raise ActionsError(
            f"{symbol}: no corporate actions fetched yet ({', '.join(missing)} missing); "
            "materialize raw_actions for it first"
        )
    return RawActions(_read(paths["splits"], symbol), _read(paths["dividends"], symbol))


def _write(home: DataHome, symbol: str, validated: ValidatedActions) -> ActionsResult:
    path = home.actions_rejects_file(symbol)
    try:
        write_parquet_atomic(validated.rejects.select(REJECT_COLUMNS), path)
    except OSError as exc:
        raise ActionsError(f"{symbol}: cannot write {path}: {exc}") from exc
    return ActionsResult(
        symbol=symbol.upper(),
        events=validated.events,
        rejects=validated.rejects,
        reject_counts=validated.reject_counts,
        complete_kinds=validated.complete_kinds,
    )


def clean_actions(
    home: DataHome, symbols: Sequence[str]
) -> dict[str, ActionsResult | ActionsError]:
    """Each symbol's validated events or its own failure, in the order of ``symbols``."""
    outcomes: dict[str, ActionsResult | ActionsError] = {}
    answers: dict[str, RawActions] = {}
    for symbol in symbols:
        try:
            answers[symbol] = read_raw_actions(home, symbol)
        except ActionsError as exc:
            outcomes[symbol] = exc
    for symbol, validated in validate_actions_many(answers).items():
        try:
            outcomes[symbol] = _write(home, symbol, validated)
        except ActionsError as exc:
            outcomes[symbol] = exc
    return {symbol: outcomes[symbol] for symbol in symbols}
