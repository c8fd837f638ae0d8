"""Where the pipeline keeps its files, and its only way to write the DuckDB file.

Parquet files are replaced atomically (``market_core.atomic``), so a crash mid-write leaves the
previous file readable.
``MarketDuckDB`` is dagster-duckdb's ``DuckDBResource`` plus the write hand-off with the API
(``market_core.handoff``): the file implementation of ``market_core.store.StoreWriter``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import duckdb
import polars as pl
from dagster_duckdb import DuckDBResource

from market_core.atomic import write_atomic
from market_core.handoff import WriteHandoff, exclusive_write
from market_core.home import DataHome
from market_core.schema import CREATE_TABLE_SQL
from market_core.store import LoadStats
from market_pipeline.stages.ohlcv import upsert


def write_parquet_atomic(frame: pl.DataFrame, path: Path) -> None:
    # zstd level 1: files a fifth bigger than the default level 3, a quarter less CPU.
    write_atomic(
        path,
        lambda tmp: frame.write_parquet(
            tmp, compression="zstd", compression_level=1, statistics=True
        ),
    )


class MarketDuckDB(DuckDBResource):
    """The ``ohlcv_data`` DuckDB file of a data home: the pipeline's ``StoreWriter``.

    Read-write connections are short-lived on purpose: while one is open the API cannot read
    the file, so it serves from its cache. Each is held under the write lock
    (``market_core.handoff``), so that the API lets go of the file and loaders take turns.
    """

    @property
    def home(self) -> DataHome:
        return DataHome(Path(self.database).parent)

    @contextlib.contextmanager
    def _session(self) -> Iterator[tuple[duckdb.DuckDBPyConnection, WriteHandoff]]:
        with exclusive_write(self.home) as handoff, self.get_connection() as conn:
            try:
                conn.execute(CREATE_TABLE_SQL)
                yield conn, handoff
            finally:
                conn.close()

    @contextlib.contextmanager
    def write_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-write connection for work other than ``load`` (benchmarks, maintenance).

        Readers are told of a new data version afterwards, whatever the caller did."""
        with self._session() as (conn, handoff):
            yield conn
            conn.close()
            handoff.finish(changed=True)

    def load(self, frames: Sequence[pl.DataFrame]) -> LoadStats:
        """Upsert ``frames`` (clean bars) in one transaction and tell readers if rows changed."""
        with self._session() as (conn, handoff):
            stats = upsert(conn, list(frames))
            conn.close()  # checkpoint now, under the lock, so the record sees the file as left
            handoff.finish(changed=bool(stats.inserted or stats.updated))
        return stats
