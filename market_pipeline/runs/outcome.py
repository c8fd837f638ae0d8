"""What a run of any path returns: a typed result per symbol and stage, or the symbol's failure.

Values, not metadata dicts, so that one function in ``defs`` maps every result to Dagster
metadata and tests read fields mypy knows. They hold no bars: a backfill's frames would
otherwise stay in memory until the run ends.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeVar

import polars as pl

from market_core.assets import ACTIONS, RAW_ACTIONS, RAW_INTRADAY
from market_core.schema import DIVIDEND, SPLIT
from market_pipeline.actions.clean import ActionsResult
from market_pipeline.actions.fetch import RawActionsResult
from market_pipeline.actions.known import move_days
from market_pipeline.daily.clean import CleanResult
from market_pipeline.daily.fetch import RawResult
from market_pipeline.intraday.stages import CleanIntraday, RawIntraday
from market_pipeline.source.errors import (
    AlphaVantageError,
    DailyQuotaError,
    InvalidApiKeyError,
    PremiumOnlyError,
)
from market_pipeline.source.rate_limit import LimiterStoreError

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


@dataclass(frozen=True)
class IntradayCleaned:
    """``clean_intraday`` of one symbol and interval, without the bars."""

    symbol: str
    interval: str
    rows: int
    first: str
    last: str
    rejected: int
    reject_counts: Mapping[str, int]
    flagged: int
    path: str
    rejects_path: str

    @classmethod
    def of(cls, result: CleanIntraday) -> IntradayCleaned:
        v = result.validated
        ts = v.clean.get_column("timestamp")
        return cls(
            symbol=result.symbol,
            interval=result.interval,
            rows=v.clean.height,
            first=str(ts.min()),
            last=str(ts.max()),
            rejected=v.rejects.height,
            reject_counts=dict(v.reject_counts),
            flagged=int(v.clean.get_column("flags").is_not_null().sum()),
            path=result.path,
            rejects_path=result.rejects_path,
        )


@dataclass(frozen=True)
class IntradayLoaded:
    """``intraday_data`` of one symbol: the bars it offered; ``batch_*`` count the transaction."""

    symbol: str
    rows: int
    table: str
    batch_inserted: int
    batch_revised: int


StageResult = (
    RawResult
    | Cleaned
    | Loaded
    | ActionsFetched
    | ActionsLoaded
    | RawIntraday
    | IntradayCleaned
    | IntradayLoaded
)
"""One symbol's result of one stage, of any path; ``defs.outcomes.metadata`` maps each type."""


class ErrorKind(StrEnum):
    """Why a symbol failed, as far as what to do next differs."""

    SOURCE = "source"
    """Alpha Vantage's answer for this symbol (unknown symbol, malformed, retries spent)."""
    KEY = "key"
    """An answer about the key (wrong key, daily quota used up): later symbols would get it too."""
    REFUSED = "refused"
    """The endpoint is not in the key's plan (intraday on a free key)."""
    DATA = "data"
    """The symbol's own files or bars: missing, unreadable, or nothing valid in them."""
    LOAD = "load"
    """The transaction holding the symbol rolled back: nothing of its batch was stored."""
    SERVICE = "service"
    """A shared service (the limiter's PostgreSQL) was out for longer than a call may wait:
    nothing was called; ``make retry-failed`` loads the symbol once it is back."""


def kind_of(exc: Exception) -> ErrorKind:
    if isinstance(exc, PremiumOnlyError):
        return ErrorKind.REFUSED
    if isinstance(exc, InvalidApiKeyError | DailyQuotaError):
        return ErrorKind.KEY
    if isinstance(exc, AlphaVantageError):
        return ErrorKind.SOURCE
    if isinstance(exc, LimiterStoreError):
        return ErrorKind.SERVICE
    return ErrorKind.DATA


ACTIONS_STAGES = (RAW_ACTIONS, ACTIONS)
"""A failure here leaves the symbol's bars loaded: only its corporate actions stay due."""


@dataclass(frozen=True)
class StageFailed:
    """The symbol failed at ``stage``; ``message`` names the symbol and says what to do."""

    symbol: str
    stage: str
    kind: ErrorKind
    message: str

    @classmethod
    def of(cls, symbol: str, stage: str, exc: Exception) -> StageFailed:
        return cls(symbol, stage, kind_of(exc), str(exc))

    @property
    def actions_only(self) -> bool:
        return self.stage in ACTIONS_STAGES


@dataclass(frozen=True)
class NotAttempted:
    """An earlier symbol met an answer every later one would get too (a bad key, a spent daily
    quota), so this one was not tried at ``stage``. At a corporate-actions stage its bars are
    loaded; only its actions wait (they stay due)."""

    symbol: str
    stage: str
    reason: str

    @property
    def actions_only(self) -> bool:
        return self.stage in ACTIONS_STAGES

    @property
    def message(self) -> str:
        if self.actions_only:
            return (
                f"{self.symbol}: corporate actions not attempted (they stay due for the next "
                f"run; its bars are not affected): {self.reason}"
            )
        if self.stage == RAW_INTRADAY:
            return f"{self.symbol}: not fetched: {self.reason}"
        return f"{self.symbol}: not attempted: {self.reason}"


SymbolFailure = StageFailed | NotAttempted
R = TypeVar("R")


@dataclass(frozen=True)
class BatchOutcome:
    """Every symbol of the run ends materialized up to its last selected stage, or failed.

    ``materialized`` maps each selected stage, in the order the data flows, to its symbols'
    results, in the order they were produced. A symbol fails at most once."""

    symbols: tuple[str, ...]
    materialized: Mapping[str, Mapping[str, StageResult]]
    failures: Mapping[str, SymbolFailure]
    unexplained_moves: Mapping[str, tuple[dt.date, ...]] = field(default_factory=dict)
    """Per cleaned symbol with large moves, the days no known action explains (after this
    run's actions were loaded): the ``unexplained_large_move`` check. Daily path only."""

    def results(self, kind: type[R]) -> dict[str, R]:
        """Each symbol's result of one type, e.g. ``results(Cleaned)`` for the asset checks."""
        return {
            symbol: result
            for by_symbol in self.materialized.values()
            for symbol, result in by_symbol.items()
            if isinstance(result, kind)
        }
