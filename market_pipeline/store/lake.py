"""The lake implementation of ``market_core.store.StoreWriter``: ``LakeStore``.

The file store's semantics on DuckLake (the SQL lives beside the file's, one module per table
family). No hand-off: readers follow snapshots. Loads take turns through the catalog's advisory
lock, and each is one transaction retried whole when it loses to a writer outside the lock;
why both are needed is in docs/design/pipeline-internals.md.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import duckdb
import polars as pl
import pyarrow as pa

from market_core.home import DataHome
from market_core.lake import (
    EXTENSIONS_FOLDER,
    LakeSettings,
    connect,
    rollback,
    with_conflict_retry,
    write_lock,
)
from market_core.schema import COLUMNS
from market_core.store import ActionsLoadStats, LoadStats, SymbolActions
from market_pipeline.store.actions import actions_frames, load_stats, merge_actions, stored_ex_dates
from market_pipeline.store.bars import merge_bars
from market_pipeline.store.intraday import (
    INCOMING,
    MERGE_INTRADAY_SQL,
    intraday_incoming,
    write_intraday,
)

T = TypeVar("T")


def _transaction(
    conn: duckdb.DuckDBPyConnection,
    relations: dict[str, pa.Table],
    work: Callable[[duckdb.DuckDBPyConnection], T],
) -> T:
    """``work`` in one transaction over the registered ``relations``, rolled back on any error
    and run again whole when its commit lost to another writer's."""

    def attempt() -> T:
        conn.begin()
        try:
            for name, table in relations.items():
                conn.register(name, table)
            result = work(conn)
            for name in relations:
                conn.unregister(name)
            conn.commit()
        except BaseException:
            rollback(conn)
            for name in relations:
                with contextlib.suppress(duckdb.Error):
                    conn.unregister(name)
            raise
        return result

    return with_conflict_retry(attempt)


def merge_intraday(conn: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    """(inserted, updated) for the registered ``incoming`` intraday bars, merged into the
    lake's ``ohlcv_intraday``."""
    return write_intraday(conn, MERGE_INTRADAY_SQL)


@dataclass(frozen=True)
class LakeStore:
    """``ohlcv_data``, ``ohlcv_intraday`` and ``corporate_actions`` in the shared lake: the
    pipeline's ``StoreWriter`` when ``MARKET_POSTGRES_URL`` is set. A connection is opened per
    load and closed after: a load is one transaction, and a killed process leaves nothing open."""

    postgres_url: str
    shared_home: str
    data_home: str
    """This machine's data home: the DuckDB extensions are installed below it."""

    @property
    def settings(self) -> LakeSettings:
        return LakeSettings(
            postgres_url=self.postgres_url,
            shared_home=self.shared_home,
            extension_dir=Path(self.data_home) / EXTENSIONS_FOLDER,
        )

    @property
    def home(self) -> DataHome:
        return DataHome(Path(self.data_home), Path(self.shared_home))

    @property
    def database(self) -> str:
        """Where loads go, for run metadata and messages: the catalog without its password."""
        return f"ducklake:{self.settings.redacted_url}"

    def _with_connection(self, work: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """``work`` on a fresh connection, under the lake's write lock (``write_lock``)."""
        settings = self.settings
        with write_lock(settings):
            conn = connect(settings)
            try:
                return work(conn)
            finally:
                conn.close()

    def load(self, frames: Sequence[pl.DataFrame]) -> LoadStats:
        """Upsert ``frames`` (clean bars, each (symbol, timestamp) once) in one commit."""
        incoming = pl.concat(list(frames), how="vertical").select(COLUMNS).to_arrow()
        inserted, updated = self._with_connection(
            lambda conn: _transaction(conn, {"incoming": incoming}, merge_bars)
        )
        return LoadStats(rows=incoming.num_rows, inserted=inserted, updated=updated)

    def load_intraday(self, frames: Sequence[pl.DataFrame]) -> LoadStats:
        """Upsert ``frames`` (clean intraday bars) into ``ohlcv_intraday``, in one commit."""
        incoming = intraday_incoming(frames)
        inserted, updated = self._with_connection(
            lambda conn: _transaction(conn, {INCOMING: incoming}, merge_intraday)
        )
        return LoadStats(rows=incoming.num_rows, inserted=inserted, updated=updated)

    def load_actions(self, results: Sequence[SymbolActions]) -> ActionsLoadStats:
        """Make each symbol's stored corporate actions its latest answer, in one commit."""
        relations = {name: frame.to_arrow() for name, frame in actions_frames(results).items()}
        vanished, inserted, updated = self._with_connection(
            lambda conn: _transaction(conn, relations, merge_actions)
        )
        return load_stats(vanished, inserted, updated)

    def stored_ex_dates(self, symbols: Sequence[str]) -> dict[str, set[dt.date]]:
        """Each symbol's ex-dates in ``corporate_actions``, read from the current snapshot."""
        if not symbols:
            return {}
        conn = connect(self.settings, read_only=True)
        try:
            return stored_ex_dates(conn, symbols)
        finally:
            conn.close()
