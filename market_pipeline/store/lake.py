"""The lake implementation of ``market_core.store.StoreWriter``: ``MarketLake``.

Same semantics as the file's ``MarketDuckDB`` (``storage.py``), other SQL: DuckLake has no
unique constraints, so ``ON CONFLICT`` becomes ``MERGE INTO`` keyed on the same columns, whose
``WHEN MATCHED AND ... IS DISTINCT FROM ...`` leaves identical rows alone. A reload that changes
nothing therefore commits no snapshot, and the API, which follows the snapshot id, keeps its
cache. DuckLake has no ``RETURNING`` either: the vanished corporate actions are selected, then
deleted by the same predicate, in one snapshot-isolated transaction.

There is no hand-off: readers see a commit as a new snapshot. Loads take turns through an
advisory lock in the catalog's database (``market_core.lake.write_lock``): inserts never
conflict in DuckLake, so two loads that each found a symbol new would otherwise both store its
bars. Two commits to one table conflict even on disjoint keys, so each load is also one
transaction retried whole with backoff when it loses to a writer outside the lock
(``market_core.lake.with_conflict_retry``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import duckdb
import polars as pl
import pyarrow as pa
from dagster import ConfigurableResource, EnvVar

from market_core.home import DataHome
from market_core.lake import (
    EXTENSIONS_FOLDER,
    POSTGRES_URL_VAR,
    SHARED_HOME_VAR,
    LakeSettings,
    connect,
    rollback,
    with_conflict_retry,
    write_lock,
)
from market_core.schema import (
    ACTIONS_COLUMNS,
    ACTIONS_TABLE,
    COLUMNS,
    TABLE,
)
from market_core.store import ActionsLoadStats, LoadStats, SymbolActions
from market_pipeline.actions.known import stored_ex_dates
from market_pipeline.actions.rules import KEY_COLUMNS
from market_pipeline.store.bars import insert_or_upsert
from market_pipeline.store.duckdb_file import (
    COUNT_ACTIONS_SQL,
    MarketDuckDB,
    actions_frames,
    vanished_by_symbol,
)
from market_pipeline.store.intraday import (
    INCOMING,
    MERGE_INTRADAY_SQL,
    intraday_incoming,
    write_intraday,
)

T = TypeVar("T")

_VALUES = ("open", "high", "low", "close", "volume")
_LIST = ", ".join(COLUMNS)
MERGE_SQL = f"""
MERGE INTO {TABLE} AS stored USING incoming
ON stored.symbol = incoming.symbol AND stored.timestamp = incoming.timestamp
WHEN MATCHED AND ({" OR ".join(f"stored.{c} IS DISTINCT FROM incoming.{c}" for c in _VALUES)})
    THEN UPDATE SET {", ".join(f"{c} = incoming.{c}" for c in _VALUES)}
WHEN NOT MATCHED THEN INSERT ({_LIST}) VALUES ({", ".join(f"incoming.{c}" for c in COLUMNS)})
"""

_ACTION_VALUES = tuple(c for c in ACTIONS_COLUMNS if c not in KEY_COLUMNS)
_ACTION_DIFFERS = " OR ".join(f"stored.{c} IS DISTINCT FROM incoming.{c}" for c in _ACTION_VALUES)
MERGE_ACTIONS_SQL = f"""
MERGE INTO {ACTIONS_TABLE} AS stored USING incoming_actions AS incoming
ON {" AND ".join(f"stored.{c} = incoming.{c}" for c in KEY_COLUMNS)}
WHEN MATCHED AND ({_ACTION_DIFFERS})
    THEN UPDATE SET {", ".join(f"{c} = incoming.{c}" for c in _ACTION_VALUES)}
WHEN NOT MATCHED THEN INSERT ({", ".join(ACTIONS_COLUMNS)})
    VALUES ({", ".join(f"incoming.{c}" for c in ACTIONS_COLUMNS)})
"""
# A stored event of a complete kind that the symbol's answer no longer mentions has vanished.
_VANISHED = f"""
EXISTS (
    SELECT 1 FROM complete_kinds AS c
    WHERE c.symbol = {ACTIONS_TABLE}.symbol AND c.kind = {ACTIONS_TABLE}.kind
) AND NOT EXISTS (
    SELECT 1 FROM answered_actions AS a
    WHERE a.symbol = {ACTIONS_TABLE}.symbol AND a.kind = {ACTIONS_TABLE}.kind
      AND a.ex_date = {ACTIONS_TABLE}.ex_date
)
"""
SELECT_VANISHED_SQL = f"SELECT symbol, ex_date, kind FROM {ACTIONS_TABLE} WHERE {_VANISHED}"
DELETE_VANISHED_SQL = f"DELETE FROM {ACTIONS_TABLE} WHERE {_VANISHED}"


def _count(conn: duckdb.DuckDBPyConnection, sql: str) -> int:
    return int(conn.execute(sql).fetchall()[0][0])


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


def merge_bars(conn: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    """(inserted, updated) for the registered ``incoming``, merged into the lake's table."""
    return insert_or_upsert(conn, MERGE_SQL)


def merge_intraday(conn: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    """(inserted, updated) for the registered ``incoming`` intraday bars, merged into the
    lake's ``ohlcv_intraday``."""
    return write_intraday(conn, MERGE_INTRADAY_SQL)


def merge_actions(
    conn: duckdb.DuckDBPyConnection,
) -> tuple[list[tuple[str, dt.date, str]], int, int]:
    """(vanished, inserted, updated) for the registered ``actions_frames`` relations. Deletes
    first: a deleted key is never one being upserted."""
    vanished = [(str(s), d, str(k)) for s, d, k in conn.execute(SELECT_VANISHED_SQL).fetchall()]
    if vanished:
        conn.execute(DELETE_VANISHED_SQL)
    before = _count(conn, COUNT_ACTIONS_SQL)
    affected = _count(conn, MERGE_ACTIONS_SQL)
    inserted = _count(conn, COUNT_ACTIONS_SQL) - before
    return vanished, inserted, affected - inserted


class MarketLake(ConfigurableResource):
    """``ohlcv_data`` and ``corporate_actions`` in the shared lake: the pipeline's
    ``StoreWriter`` when ``MARKET_POSTGRES_URL`` is set.

    ``postgres_url`` and ``shared_home`` come through ``EnvVar``s, so that the Dagster UI shows
    the variables' names, never a password. A connection is opened per load and closed after:
    a load is one transaction, and a killed process leaves nothing open."""

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
        return ActionsLoadStats(
            inserted=inserted,
            updated=updated,
            deleted=len(vanished),
            deleted_by_symbol=vanished_by_symbol(vanished),
        )

    def stored_ex_dates(self, symbols: Sequence[str]) -> dict[str, set[dt.date]]:
        """Each symbol's ex-dates in ``corporate_actions``, read from the current snapshot."""
        if not symbols:
            return {}
        conn = connect(self.settings, read_only=True)
        try:
            return stored_ex_dates(conn, symbols)
        finally:
            conn.close()


def store_from_env(home: DataHome) -> MarketDuckDB | MarketLake:
    """The ``duckdb`` resource: the lake when ``MARKET_POSTGRES_URL`` is set, else the data
    home's DuckDB file exactly as before. The lake's URL and folder stay ``EnvVar``s, so that
    the Dagster UI shows the variables' names, never a password."""
    if LakeSettings.from_env() is None:
        return MarketDuckDB(database=str(home.duckdb_path))
    return MarketLake(
        postgres_url=EnvVar(POSTGRES_URL_VAR),
        shared_home=EnvVar(SHARED_HOME_VAR),
        data_home=str(home.root),
    )
