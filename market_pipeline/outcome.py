"""What a batch run returns: a typed result per symbol and stage, or the symbol's failure.

The results are values, not metadata dicts: ``market_pipeline.assets`` turns each type into
Dagster metadata in one place, and tests read fields that mypy knows. They hold no bars (a
backfill's clean frames would otherwise stay in memory until the run ends), only what a
materialization reports about them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import polars as pl

from market_pipeline.stages.clean import CleanResult
from market_pipeline.stages.raw import RawResult

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


StageResult = RawResult | Cleaned | Loaded
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
    quota), so this one was not tried."""

    symbol: str
    reason: str

    @property
    def message(self) -> str:
        return f"{self.symbol}: not attempted: {self.reason}"


SymbolFailure = StageFailed | NotAttempted
R = TypeVar("R")


@dataclass(frozen=True)
class BatchOutcome:
    """Every symbol of the run ends materialized up to its last selected stage, or failed.

    ``materialized`` maps each selected stage, in the order the data flows, to its symbols'
    results, in the order they were produced."""

    symbols: tuple[str, ...]
    materialized: Mapping[str, Mapping[str, StageResult]]
    failures: Mapping[str, SymbolFailure]

    def results(self, kind: type[R]) -> dict[str, R]:
        """Each symbol's result of one type, e.g. ``results(Cleaned)`` for the asset checks."""
        return {
            symbol: result
            for by_symbol in self.materialized.values()
            for symbol, result in by_symbol.items()
            if isinstance(result, kind)
        }
