"""``listings``: its typed columns, its key, and every statement that writes or reads it.

A listing is known by (symbol, ipo_date): a ticker reused by a later company is a second row,
never an overwrite. A load upserts the latest answers: the vendor's values replace the stored
ones, ``first_seen`` keeps the earliest day and ``last_seen`` the latest, and an identical
reload changes nothing. Nothing is deleted: a listing that vanished from the answers keeps the
day it was last seen. The file takes the load as ``ON CONFLICT``, the lake (no unique
constraints) as ``MERGE``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import duckdb
import polars as pl
import pyarrow as pa

from market_core.lake import LakeError, connect, rollback, with_conflict_retry, write_lock
from market_core.schema import (
    CREATE_LISTINGS_SQL,
    LISTINGS_COLUMNS,
    LISTINGS_KEY,
    LISTINGS_TABLE,
)
from market_core.store import LoadStats
from market_pipeline.store.duckdb_file import DuckDBFileStore
from market_pipeline.store.lake import LakeStore

LISTING_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "symbol": pl.String,
    "name": pl.String,
    "exchange": pl.String,
    "asset_type": pl.String,
    "ipo_date": pl.Date,
    "delisting_date": pl.Date,
    "status": pl.String,
    "first_seen": pl.Date,
    "last_seen": pl.Date,
}
assert tuple(LISTING_SCHEMA) == LISTINGS_COLUMNS
INCOMING = "incoming_listings"
_LIST = ", ".join(LISTINGS_COLUMNS)
_VALUES = ("name", "exchange", "asset_type", "delisting_date", "status")
_SEEN = "first_seen = least({t}.first_seen, {n}.first_seen), " + (
    "last_seen = greatest({t}.last_seen, {n}.last_seen)"
)
_CHANGED = " OR ".join(
    [f"{{t}}.{c} IS DISTINCT FROM {{n}}.{c}" for c in _VALUES]
    + ["{n}.first_seen < {t}.first_seen", "{n}.last_seen > {t}.last_seen"]
)

UPSERT_LISTINGS_SQL = f"""
INSERT INTO {LISTINGS_TABLE} ({_LIST})
SELECT {_LIST} FROM {INCOMING}
ON CONFLICT ({", ".join(LISTINGS_KEY)}) DO UPDATE SET
    {", ".join(f"{c} = excluded.{c}" for c in _VALUES)},
    {_SEEN.format(t=LISTINGS_TABLE, n="excluded")}
WHERE {_CHANGED.format(t=LISTINGS_TABLE, n="excluded")}
"""
MERGE_LISTINGS_SQL = f"""
MERGE INTO {LISTINGS_TABLE} AS stored USING {INCOMING} AS incoming
ON {" AND ".join(f"stored.{c} = incoming.{c}" for c in LISTINGS_KEY)}
WHEN MATCHED AND ({_CHANGED.format(t="stored", n="incoming")})
    THEN UPDATE SET {", ".join(f"{c} = incoming.{c}" for c in _VALUES)},
        {_SEEN.format(t="stored", n="incoming")}
WHEN NOT MATCHED THEN INSERT ({_LIST})
    VALUES ({", ".join(f"incoming.{c}" for c in LISTINGS_COLUMNS)})
"""
LAKE_CREATE_LISTINGS_SQL = CREATE_LISTINGS_SQL.replace(
    f",\n    UNIQUE ({', '.join(LISTINGS_KEY)})", ""
)
"""The lake's table: the same columns, without the UNIQUE clause DuckLake does not have."""
assert LAKE_CREATE_LISTINGS_SQL != CREATE_LISTINGS_SQL
_COUNT_SQL = f"SELECT count(*) FROM {LISTINGS_TABLE}"
_READ_SQL = f"SELECT {_LIST} FROM {LISTINGS_TABLE} ORDER BY symbol, ipo_date"


class ListingsTable(Protocol):
    """The ``listings`` table of one store, file or lake."""

    def load(self, listings: pl.DataFrame) -> LoadStats:
        """Upsert ``listings`` (``LISTING_SCHEMA``, each (symbol, ipo_date) once) in one
        transaction; when it returns, readers see the change."""
        ...

    def read(self) -> pl.DataFrame | None:
        """Every stored listing, or ``None`` when there is no table yet or the store cannot
        be read right now (a loader holds the file)."""
        ...


def incoming(listings: pl.DataFrame) -> pa.Table:
    """The rows a load registers, typed and checked: DuckDB would apply one of two copies of a
    key silently."""
    frame = listings.select(LISTINGS_COLUMNS).cast(LISTING_SCHEMA)  # type: ignore[arg-type]
    if frame.select(LISTINGS_KEY).null_count().sum_horizontal().item():
        raise ValueError("a listing without a symbol or an IPO date cannot be loaded")
    twice = frame.filter(frame.select(LISTINGS_KEY).is_duplicated())
    if not twice.is_empty():
        symbol, ipo_date = twice.select(LISTINGS_KEY).row(0)
        raise ValueError(f"{symbol} (IPO {ipo_date}) is given twice in one listings load")
    return frame.to_arrow()


def write_listings(conn: duckdb.DuckDBPyConnection, sql: str) -> LoadStats:
    """(rows, inserted, updated) by ``sql`` over the registered ``incoming_listings``, inside
    the caller's transaction: the table's growth tells new rows from revised ones."""
    rows = _count(conn, f"SELECT count(*) FROM {INCOMING}")
    before = _count(conn, _COUNT_SQL)
    affected = _count(conn, sql)
    inserted = _count(conn, _COUNT_SQL) - before
    return LoadStats(rows=rows, inserted=inserted, updated=affected - inserted)


def _count(conn: duckdb.DuckDBPyConnection, sql: str) -> int:
    return int(conn.execute(sql).fetchall()[0][0])


def _read(conn: duckdb.DuckDBPyConnection) -> pl.DataFrame | None:
    """None until a listing is loaded: the table is missing, or (the lake creates every table
    with the catalog) empty; a loaded listing is never empty."""
    try:
        frame = conn.execute(_READ_SQL).pl().cast(LISTING_SCHEMA)  # type: ignore[arg-type]
    except duckdb.CatalogException:
        return None
    return frame if frame.height else None


def _load(conn: duckdb.DuckDBPyConnection, table: pa.Table, create: str, write: str) -> LoadStats:
    """One transaction: the table created if missing, then ``write`` over ``table`` registered
    as ``incoming_listings``; rolled back on any error."""
    conn.begin()
    try:
        conn.execute(create)
        conn.register(INCOMING, table)
        stats = write_listings(conn, write)
        conn.unregister(INCOMING)
        conn.commit()
    except BaseException:
        rollback(conn)
        with contextlib.suppress(duckdb.Error):
            conn.unregister(INCOMING)
        raise
    return stats


@dataclass(frozen=True)
class FileListings:
    """``listings`` in the data home's DuckDB file, written under its write lock (the store's
    ``write_connection``, which tells the API of a new data version afterwards)."""

    store: DuckDBFileStore

    def load(self, listings: pl.DataFrame) -> LoadStats:
        table = incoming(listings)
        with self.store.write_connection() as conn:
            return _load(conn, table, CREATE_LISTINGS_SQL, UPSERT_LISTINGS_SQL)

    def read(self) -> pl.DataFrame | None:
        """Through a read-only connection: it needs no write lock, so the API keeps the file."""
        path = Path(self.store.database)
        if not path.exists():
            return None
        try:
            with duckdb.connect(str(path), read_only=True) as conn:
                return _read(conn)
        except duckdb.Error:  # another process writes the file right now
            return None


@dataclass(frozen=True)
class LakeListings:
    """``listings`` in the shared lake: one snapshot per load that changed something."""

    store: LakeStore

    def load(self, listings: pl.DataFrame) -> LoadStats:
        table = incoming(listings)
        settings = self.store.settings
        with write_lock(settings):
            conn = connect(settings)
            try:
                return with_conflict_retry(
                    lambda: _load(conn, table, LAKE_CREATE_LISTINGS_SQL, MERGE_LISTINGS_SQL)
                )
            finally:
                conn.close()

    def read(self) -> pl.DataFrame | None:
        try:
            conn = connect(self.store.settings, read_only=True)
        except (duckdb.Error, LakeError):
            return None
        try:
            return _read(conn)
        finally:
            conn.close()


def listings_table(store: DuckDBFileStore | LakeStore) -> ListingsTable:
    """The ``listings`` table of ``store``. The one place that tells the two stores apart,
    until ``StoreWriter`` has a listings method of its own."""
    if isinstance(store, LakeStore):
        return LakeListings(store)
    return FileListings(store)
