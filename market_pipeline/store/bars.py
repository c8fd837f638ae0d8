"""``ohlcv_data``: clean bars upserted (the file) or merged (the lake), a batch in one statement
and one transaction; identical bars are left alone, a batch of new symbols is a plain insert.
Why: docs/design/pipeline-internals.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import duckdb
import polars as pl

from market_core.home import DataHome
from market_core.schema import BAR_VALUES, COLUMNS, CREATE_CHANGES_SQL, CREATE_COMMITS_SQL, TABLE
from market_core.store import LoadStats
from market_pipeline.store.changes import record_changes
from market_pipeline.store.files import read_each

_VALUES = BAR_VALUES
UPSERT_SQL = f"""
INSERT INTO {TABLE} ({", ".join(COLUMNS)})
SELECT {", ".join(COLUMNS)} FROM incoming
ON CONFLICT (symbol, timestamp) DO UPDATE SET
    {", ".join(f"{c} = excluded.{c}" for c in _VALUES)}
WHERE {" OR ".join(f"{TABLE}.{c} IS DISTINCT FROM excluded.{c}" for c in _VALUES)}
"""
# The lake has no unique constraints: the same upsert as a MERGE keyed on the same columns.
MERGE_SQL = f"""
MERGE INTO {TABLE} AS stored USING incoming
ON stored.symbol = incoming.symbol AND stored.timestamp = incoming.timestamp
WHEN MATCHED AND ({" OR ".join(f"stored.{c} IS DISTINCT FROM incoming.{c}" for c in _VALUES)})
    THEN UPDATE SET {", ".join(f"{c} = incoming.{c}" for c in _VALUES)}
WHEN NOT MATCHED THEN INSERT ({", ".join(COLUMNS)})
    VALUES ({", ".join(f"incoming.{c}" for c in COLUMNS)})
"""
INSERT_SQL = f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) SELECT {', '.join(COLUMNS)} FROM incoming"
COUNT_SQL = f"SELECT count(*) FROM {TABLE}"
STORED_SQL = f"SELECT EXISTS (SELECT 1 FROM {TABLE} WHERE symbol IN (SELECT symbol FROM incoming))"


class LoadError(Exception):
    """The symbol has no clean file to load."""


def read_clean(home: DataHome, symbol: str) -> pl.DataFrame:
    path = home.clean_file(symbol)
    if not path.exists():
        raise LoadError(f"{symbol}: no clean data yet; materialize clean_data for it first")
    return pl.read_parquet(path, columns=list(COLUMNS))


def read_cleans(home: DataHome, symbols: Sequence[str]) -> dict[str, pl.DataFrame | LoadError]:
    """Each symbol's clean bars, or its own failure (``files.read_each``)."""
    paths = {s: home.clean_file(s) for s in symbols}
    return read_each(paths, COLUMNS, partial(_read_or_fail, home))


def _read_or_fail(home: DataHome, symbol: str) -> pl.DataFrame | LoadError:
    try:
        return read_clean(home, symbol)
    except LoadError as exc:
        return exc
    except (pl.exceptions.PolarsError, OSError) as exc:
        return LoadError(f"{symbol}: cannot read {home.clean_file(symbol)}: {exc}")


def insert_or_upsert(conn: duckdb.DuckDBPyConnection, upsert_sql: str) -> tuple[int, int]:
    """(inserted, updated) for the registered ``incoming``, through ``upsert_sql`` (the file's
    ``ON CONFLICT`` or the lake's ``MERGE``): a batch of symbols with no stored bar goes in as
    a plain ``INSERT``, with no join against the whole table. Either way the change log
    (``changes.record_changes``) is written first, while the table holds the old values."""
    if _execute(conn, STORED_SQL):
        record_changes(conn, TABLE)
        before = _execute(conn, COUNT_SQL)
        affected = _execute(conn, upsert_sql)
        inserted = _execute(conn, COUNT_SQL) - before
    else:
        record_changes(conn, TABLE, all_new=True)
        affected = inserted = _execute(conn, INSERT_SQL)
    return inserted, affected - inserted


def merge_bars(conn: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    """(inserted, updated) for the registered ``incoming``, merged into the lake's table."""
    return insert_or_upsert(conn, MERGE_SQL)


def _execute(conn: duckdb.DuckDBPyConnection, sql: str) -> int:
    return int(conn.execute(sql).fetchall()[0][0])


def upsert(conn: duckdb.DuckDBPyConnection, frames: list[pl.DataFrame]) -> LoadStats:
    """Upsert the frames in one transaction; roll back on any error.

    ``frames`` hold each (symbol, timestamp) once, as validation leaves them."""
    incoming = pl.concat(frames, how="vertical").select(COLUMNS).to_arrow()
    conn.begin()
    try:
        conn.execute(CREATE_CHANGES_SQL)
        conn.execute(CREATE_COMMITS_SQL)
        conn.register("incoming", incoming)
        inserted, updated = insert_or_upsert(conn, UPSERT_SQL)
        conn.unregister("incoming")
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return LoadStats(rows=incoming.num_rows, inserted=inserted, updated=updated)
