"""The storage seam the pipeline writes through and the API reads through: two small protocols,
with the embedded DuckDB file and the shared lake behind them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    import duckdb
    import polars as pl

T = TypeVar("T")


@dataclass(frozen=True)
class LoadStats:
    """What one load did: bars offered, bars new to the table, stored bars given new values."""

    rows: int
    inserted: int
    updated: int

    @property
    def unchanged(self) -> int:
        return self.rows - self.inserted - self.updated


@dataclass(frozen=True)
class ActionsLoadStats:
    """What one load of corporate actions did. ``deleted_by_symbol`` names each event dropped
    because it vanished from its symbol's latest answer ("2014-06-09 split"), for the run's
    metadata: a vanished event changes every adjusted price before it."""

    inserted: int
    updated: int
    deleted: int
    deleted_by_symbol: dict[str, list[str]] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.inserted or self.updated or self.deleted)


class SymbolActions(Protocol):
    """One symbol's validated corporate actions, as a load takes them
    (``market_pipeline.actions.clean.ActionsResult``)."""

    @property
    def symbol(self) -> str: ...

    @property
    def events(self) -> pl.DataFrame:
        """The ``corporate_actions`` columns, typed, each (ex_date, kind) once."""
        ...

    @property
    def rejects(self) -> pl.DataFrame:
        """Rejected rows, at least ``symbol``, ``kind`` and ``ex_date`` as received: a stored
        event the answer mentioned, even in a rejected row, has not vanished."""
        ...

    @property
    def complete_kinds(self) -> frozenset[str]:
        """Kinds whose every row had a readable ex-date: only their events can vanish."""
        ...


class StoreWriter(Protocol):
    """The pipeline's one way to write bars and corporate actions."""

    @property
    def database(self) -> str:
        """Where the data goes, for run metadata and messages (never with a password)."""
        ...

    def stored_ex_dates(self, symbols: Sequence[str]) -> dict[str, set[dt.date]]:
        """Each symbol's ex-dates in ``corporate_actions`` as committed now, for the refresh
        policy; empty for a symbol (or all) when the store cannot answer right now."""
        ...

    def load(self, frames: Sequence[pl.DataFrame]) -> LoadStats:
        """Upsert clean bars (the ``ohlcv_data`` columns, each (symbol, timestamp) once) in one
        transaction. When it returns, readers can see the change, and if rows changed they see
        a new data version; if it raises, nothing of the batch is stored."""
        ...

    def load_intraday(self, frames: Sequence[pl.DataFrame]) -> LoadStats:
        """Upsert clean intraday bars (the ``ohlcv_intraday`` columns, each (symbol, interval,
        timestamp) once) in one transaction: a revised bar replaces the stored one, an
        identical one changes nothing. Same visibility, data version and failure rules as
        ``load``."""
        ...

    def load_actions(self, results: Sequence[SymbolActions]) -> ActionsLoadStats:
        """Make the stored corporate actions of each symbol its latest answer, in one
        transaction: upsert its events (a revised one replaces the old, an identical one
        changes nothing) and delete its stored events of a complete kind that the answer no
        longer mentions. Same visibility, data version and failure rules as ``load``."""
        ...


class StoreReader(Protocol):
    """The API's one way to read bars, and to learn that they changed."""

    def run(self, query: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Run ``query`` on a read-only connection (blocking: call it from a worker thread).

        Raises ``market_api.errors.DataUnavailable`` if the data cannot be read in time."""
        ...

    def data_version(self) -> str | None:
        """A token that changes whenever committed data changed (``None`` before any load).

        Cheap: the API's cache asks every poll tick and empties itself when it changes."""
        ...

    def poll(self) -> None:
        """Housekeeping from the API's background thread, every poll tick."""
        ...

    def shutdown(self) -> None:
        """Let go of everything; later queries fail as unavailable."""
        ...
