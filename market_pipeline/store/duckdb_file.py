"""The DuckDB file of a data home, the pipeline's ``StoreWriter`` in file mode.

Read-write connections are short-lived on purpose: while one is open the API cannot read the
file, so it serves from its cache. Each is held under the write lock (``market_core.handoff``),
so that the API lets go of the file and loaders take turns.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path

import duckdb
import polars as pl
import tenacity

from market_core.handoff import WriteHandoff, exclusive_write
from market_core.home import DataHome
from market_core.schema import CREATE_CHANGES_SQL, CREATE_COMMITS_SQL, CREATE_TABLE_SQL
from market_core.store import ActionsLoadStats, LoadStats, SymbolActions
from market_pipeline.store.actions import stored_ex_dates_in_file, upsert_actions
from market_pipeline.store.bars import upsert
from market_pipeline.store.intraday import upsert_intraday

Connect = Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]]

# The API lets go of the file within one poll of the write lock: until then a connect fails on
# DuckDB's own file lock. The same backoff dagster-duckdb's resource uses (10 retries from 0.1 s).
_connect_when_free = tenacity.retry(
    retry=tenacity.retry_if_exception_type((RuntimeError, duckdb.IOException)),
    wait=tenacity.wait_exponential(multiplier=0.1, max=25.6),
    stop=tenacity.stop_after_attempt(11),
    reraise=True,
)(duckdb.connect)


class DuckDBFileStore:
    """``database`` written under the data home's write lock. ``connect`` opens a read-write
    connection (Dagster passes dagster-duckdb's); ``home`` is resolved once, here."""

    def __init__(
        self, database: str | Path, *, home: DataHome | None = None, connect: Connect | None = None
    ) -> None:
        self.database = str(database)
        self.home = home if home is not None else DataHome.from_env(Path(database).parent)
        self._connect = connect or self._plain_connection

    @contextlib.contextmanager
    def _plain_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with _connect_when_free(self.database) as conn:
            yield conn

    @contextlib.contextmanager
    def _session(self) -> Iterator[tuple[duckdb.DuckDBPyConnection, WriteHandoff]]:
        with exclusive_write(self.home) as handoff, self._connect() as conn:
            try:
                conn.execute(CREATE_TABLE_SQL)
                conn.execute(CREATE_CHANGES_SQL)
                conn.execute(CREATE_COMMITS_SQL)
                yield conn, handoff
            finally:
                conn.close()

    @contextlib.contextmanager
    def write_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-write connection for work other than a load (benchmarks, maintenance).

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

    def load_intraday(self, frames: Sequence[pl.DataFrame]) -> LoadStats:
        """Upsert ``frames`` (clean intraday bars) into ``ohlcv_intraday`` in one transaction."""
        with self._session() as (conn, handoff):
            stats = upsert_intraday(conn, frames)
            conn.close()  # checkpoint now, under the lock, so the record sees the file as left
            handoff.finish(changed=bool(stats.inserted or stats.updated))
        return stats

    def stored_ex_dates(self, symbols: Sequence[str]) -> dict[str, set[dt.date]]:
        return stored_ex_dates_in_file(Path(self.database), symbols)

    def load_actions(self, results: Sequence[SymbolActions]) -> ActionsLoadStats:
        """Make each symbol's stored corporate actions its latest answer, in one transaction,
        and tell readers if any event changed: adjusted prices cached before are stale."""
        with self._session() as (conn, handoff):
            stats = upsert_actions(conn, results)
            conn.close()  # checkpoint now, under the lock, so the record sees the file as left
            handoff.finish(changed=stats.changed)
        return stats
