"""What a batch run returns: a typed result per symbol and stage, or the symbol's failure.

The results are values, not metadata dicts: ``market_pipeline.defs.assets`` turns each type into
Dagster metadata in one place, and tests read fields that mypy knows. They hold no bars (a
backfill's clean frames would otherwise stay in memory until the run ends), only what a
materialization reports about them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import polars as pl

from market_core.schema import DIVIDEND, SPLIT
from market_pipeline.actions.clean import ActionsResult
from market_pipeline.actions.fetch import RawActionsResult
from market_pipeline.actions.known import move_days
from market_pipeline.daily.clean import CleanResult
from market_pipeline.daily.fetch import RawResult

PREVIEW_ROWS = 5


def dates(frame: pl.DataFrame) -> tuple[str, str]:
    """The first and last day of ``frame``'s bars, as ISO dates."""
    ts = frame.get_column("timestamp")
    return str(ts.min())[:10], str(ts.max())[:10]


@dataclass(frozen=True)
class Cleaned:
    """``clean_data`` of one symbol: its files, the counts the asset checks report, and the
    newest bars (for the preview), without the bars themselves."""

    symbol: str
    rows: int
    first_date: str
    last_date: str
    rejected: int
    flagged: int
    outside_history_window: int
    path: str
    rejects_path: str
    reject_counts: Mapping[str, int]
    flag_counts: Mapping[str, int]
    newest: pl.DataFrame = field(compare=False, repr=False)
    large_moves: tuple[dt.date, ...] = ()
    """The days flagged ``large_move``: the refresh policy looks for an action on each."""

    @classmethod
    def of(cls, result: CleanResult) -> Cleaned:
        v = result.validated
        first, last = dates(v.clean)
        return cls(
            symbol=result.symbol,
            rows=v.clean.height,
            first_date=first,
            last_date=last,
            rejected=v.rejects.height,
            flagged=int(v.clean.get_column("flags").is_not_null().sum()),
            outside_history_window=v.filtered_out,
            path=result.path,
            rejects_path=result.rejects_path,
            reject_counts=dict(v.reject_counts),
            flag_counts=dict(v.flag_counts),
            newest=v.clean.tail(PREVIEW_ROWS),
            large_moves=move_days(v.clean),
        )


@dataclass(frozen=True)
class Loaded:
    """``ohlcv_data`` of one symbol; ``batch_*`` count the rows of its whole transaction."""

    symbol: str
    rows: int
    first_date: str
    last_date: str
    table: str
    database: str
    batch_inserted: int
    batch_revised: int


@dataclass(frozen=True)
class ActionsFetched:
    """``raw_actions`` of one symbol: rows received per function, and why they were due."""

    symbol: str
    splits: int
    dividends: int
    splits_path: str
    dividends_path: str
    source: str
    reason: str

    @classmethod
    def of(cls, result: RawActionsResult, reason: str) -> ActionsFetched:
        splits_path, dividends_path = result.paths
        return cls(result.symbol, result.splits, result.dividends, splits_path, dividends_path,
                   result.source, reason)  # fmt: skip


@dataclass(frozen=True)
class ActionsLoaded:
    """``corporate_actions`` of one symbol after its load; ``batch_*`` count the whole
    transaction, ``vanished`` this symbol's events dropped from the table ("2014-06-09 split")."""

    symbol: str
    events: int
    splits: int
    dividends: int
    newest_ex_date: str | None
    rejected: int
    reject_counts: Mapping[str, int]
    vanished: tuple[str, ...]
    rejects_path: str
    table: str
    database: str
    batch_inserted: int
    batch_updated: int
    batch_deleted: int

    @classmethod
    def of(
        cls,
        result: ActionsResult,
        *,
        vanished: tuple[str, ...],
        rejects_path: str,
        table: str,
        database: str,
        batch: tuple[int, int, int],
    ) -> ActionsLoaded:
        kinds = result.events.get_column("kind")
        newest = result.events.get_column("ex_date").max()
        return cls(
            symbol=result.symbol,
            events=result.events.height,
            splits=int((kinds == SPLIT).sum()),
            dividends=int((kinds == DIVIDEND).sum()),
            newest_ex_date=None if newest is None else str(newest),
            rejected=result.rejects.height,
            reject_counts=dict(result.reject_counts),
            vanished=vanished,
            rejects_path=rejects_path,
            table=table,
            database=database,
            batch_inserted=batch[0],
            batch_updated=batch[1],
            batch_deleted=batch[2],
        )


StageResult = RawResult | Cleaned | Loaded | ActionsFetched | ActionsLoaded
"""One symbol's result of one stage; ``assets._metadata`` maps each type to Dagster metadata."""


@dataclass(frozen=True)
class StageFailed:
    """The symbol failed at ``stage``; ``message`` names the symbol and says what to do."""

    symbol: str
    stage: str
    message: str


@dataclass(frozen=True)
class NotAttempted:
    """An earlier symbol hit an error every later one would hit too (a bad key, a spent daily
    quota), so this one was not tried. ``actions_only``: the error came during the corporate
    actions, after this symbol's bars were loaded; only its actions wait (they stay due)."""

    symbol: str
    reason: str
    actions_only: bool = False

    @property
    def message(self) -> str:
        if self.actions_only:
            return (
                f"{self.symbol}: corporate actions not attempted (they stay due for the next "
                f"run; its bars are not affected): {self.reason}"
            )
        return f"{self.symbol}: not attempted: {self.reason}"


SymbolFailure = StageFailed | NotAttempted
R = TypeVar("R")


@dataclass(frozen=True)
class BatchOutcome:
    """Every symbol of the run ends materialized up to its last selected stage, or failed.

    ``materialized`` maps each selected stage, in the order the data flows, to its symbols'
    results, in the order they were produced. A symbol fails at most once: its actions are
    attempted only when its bars did not fail."""

    symbols: tuple[str, ...]
    materialized: Mapping[str, Mapping[str, StageResult]]
    failures: Mapping[str, SymbolFailure]
    unexplained_moves: Mapping[str, tuple[dt.date, ...]] = field(default_factory=dict)
    """Per cleaned symbol with large moves, the days no known action explains (after this
    run's actions were loaded): the ``unexplained_large_move`` check."""

    def results(self, kind: type[R]) -> dict[str, R]:
        """Each symbol's result of one type, e.g. ``results(Cleaned)`` for the asset checks."""
        return {
            symbol: result
            for by_symbol in self.materialized.values()
            for symbol, result in by_symbol.items()
            if isinstance(result, kind)
        }
