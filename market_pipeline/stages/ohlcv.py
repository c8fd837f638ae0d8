"""Stage 3, ``ohlcv_data``: clean bars upserted into the DuckDB table.

A batch of symbols goes in as one Arrow table, one statement, one transaction: the table is
either before or after the batch, never half. ``ON CONFLICT ... DO UPDATE`` makes a revised bar
(a partial day fetched before the close, a vendor correction) replace the old one, and its
``WHERE`` clause leaves identical bars alone, so loading the same data twice changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import polars as pl

from market_core.home import DataHome
from market_core.schema import COLUMNS, TABLE

_VALUES = ("open", "high", "low", "close", "volume")
UPSERT_SQL = f"""
INSERT INTO {TABLE} ({", ".join(COLUMNS)})
SELECT {", ".join(COLUMNS)} FROM incoming
ON CONFLICT (symbol, timestamp) DO UPDATE SET
    {", ".join(f"{c} = excluded.{c}" for c in _VALUES)}
WHERE {" OR ".join(f"{TABLE}.{c} IS DISTINCT FROM excluded.{c}" for c in _VALUES)}
"""


class LoadError(Exception):
    """The symbol has no clean file to load."""


@dataclass(frozen=True)
class LoadStats:
    rows: int
    inserted: int
    updated: int

    @property
    def unchanged(self) -> int:
        return self.rows - self.inserted - self.updated


def read_clean(home: DataHome, symbol: str) -> pl.DataFrame:
    path = home.clean_file(symbol)
    if not path.exists():
        raise LoadError(f"{symbol}: no clean data yet; materialize clean_data for it first")
    return pl.read_parquet(path, columns=list(COLUMNS))


def _count(conn: duckdb.DuckDBPyConnection) -> int:
    return int(conn.execute(f"SELECT count(*) FROM {TABLE}").fetchall()[0][0])


def upsert(conn: duckdb.DuckDBPyConnection, frames: list[pl.DataFrame]) -> LoadStats:
    """Upsert the frames in one transaction; roll back on any error."""
    incoming = pl.concat(frames, how="vertical").select(COLUMNS).to_arrow()
    conn.begin()
    try:
        before = _count(conn)
        conn.register("incoming", incoming)
        affected = int(conn.execute(UPSERT_SQL).fetchall()[0][0])
        inserted = _count(conn) - before
        conn.unregister("incoming")
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return LoadStats(rows=incoming.num_rows, inserted=inserted, updated=affected - inserted)
