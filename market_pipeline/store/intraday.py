"""``ohlcv_intraday``: clean intraday bars upserted (the file) or merged (the lake).

The daily load's rules on another key, ``(symbol, interval, timestamp)``: a batch is one
transaction, a revised bar replaces the stored one, an identical bar changes nothing (the
``WHERE``/``AND`` on the update), and a failed batch stores nothing. The file takes it as
``ON CONFLICT`` (``DuckDBFileStore``), the lake, which has no unique constraints, as ``MERGE``
(``LakeStore``); both count the same way through ``write_intraday``.
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb
import polars as pl
import pyarrow as pa

from market_core.schema import BAR_VALUES, CREATE_INTRADAY_SQL, INTRADAY_COLUMNS, INTRADAY_TABLE
from market_core.store import LoadStats
from market_pipeline.store.changes import record_changes

INCOMING = "incoming"
"""The registered relation a load reads (the change log reads it under the same name)."""
KEY = ("symbol", "interval", "timestamp")
_VALUES = BAR_VALUES
_LIST = ", ".join(INTRADAY_COLUMNS)
UPSERT_INTRADAY_SQL = f"""
INSERT INTO {INTRADAY_TABLE} ({_LIST})
SELECT {_LIST} FROM {INCOMING}
ON CONFLICT ({", ".join(KEY)}) DO UPDATE SET
    {", ".join(f"{c} = excluded.{c}" for c in _VALUES)}
WHERE {" OR ".join(f"{INTRADAY_TABLE}.{c} IS DISTINCT FROM excluded.{c}" for c in _VALUES)}
"""
MERGE_INTRADAY_SQL = f"""
MERGE INTO {INTRADAY_TABLE} AS stored USING {INCOMING} AS incoming
ON {" AND ".join(f"stored.{c} = incoming.{c}" for c in KEY)}
WHEN MATCHED AND ({" OR ".join(f"stored.{c} IS DISTINCT FROM incoming.{c}" for c in _VALUES)})
    THEN UPDATE SET {", ".join(f"{c} = incoming.{c}" for c in _VALUES)}
WHEN NOT MATCHED THEN INSERT ({_LIST})
    VALUES ({", ".join(f"incoming.{c}" for c in INTRADAY_COLUMNS)})
"""
COUNT_INTRADAY_SQL = f"SELECT count(*) FROM {INTRADAY_TABLE}"
BAR_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "timestamp": pl.Datetime("us"),
    "symbol": pl.String,
    "interval": pl.String,
    "open": pl.Float64,
    "high": pl.Float64,
    "low": pl.Float64,
    "close": pl.Float64,
    "volume": pl.Int64,
}


def intraday_incoming(frames: Sequence[pl.DataFrame]) -> pa.Table:
    """The frames as one typed Arrow table; a key given twice is refused (DuckDB would apply
    one of the copies silently)."""
    typed = [frame.select(INTRADAY_COLUMNS).cast(BAR_SCHEMA) for frame in frames]  # type: ignore[arg-type]
    incoming = pl.concat([pl.DataFrame(schema=BAR_SCHEMA), *typed], how="vertical")
    twice = incoming.filter(incoming.select(KEY).is_duplicated())
    if not twice.is_empty():
        symbol, interval, stamp = twice.select(KEY).row(0)
        raise ValueError(f"{symbol}: the {interval} bar of {stamp} is given twice in one load")
    return incoming.to_arrow()


def write_intraday(conn: duckdb.DuckDBPyConnection, upsert_sql: str) -> tuple[int, int]:
    """(inserted, updated) for the registered ``incoming``, through ``upsert_sql``. Runs
    inside the caller's transaction, after ``incoming`` is registered: the change log of the
    batch's new and revised bars is written here, before the upsert, by both stores."""
    record_changes(conn, INTRADAY_TABLE, INCOMING)
    before = _count(conn)
    affected = int(conn.execute(upsert_sql).fetchall()[0][0])
    inserted = _count(conn) - before
    return inserted, affected - inserted


def _count(conn: duckdb.DuckDBPyConnection) -> int:
    return int(conn.execute(COUNT_INTRADAY_SQL).fetchall()[0][0])


def upsert_intraday(conn: duckdb.DuckDBPyConnection, frames: Sequence[pl.DataFrame]) -> LoadStats:
    """The file's load: ``frames`` upserted in one transaction, rolled back on any error."""
    incoming = intraday_incoming(frames)
    conn.begin()
    try:
        conn.execute(CREATE_INTRADAY_SQL)
        conn.register(INCOMING, incoming)
        inserted, updated = write_intraday(conn, UPSERT_INTRADAY_SQL)
        conn.unregister(INCOMING)
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return LoadStats(rows=incoming.num_rows, inserted=inserted, updated=updated)
