"""The file reader: one long-lived read-only connection to the data home's DuckDB file.

It lets go of the file whenever a loader holds the write lock (``market_core.handoff``) and
reopens on the next query after; a missing file or table reads as empty. The why is in
docs/design/api-internals.md ("The file reader").
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime
from typing import TypeVar

import duckdb

from market_api.readers.errors import HistoryNotKept, StoreUnavailable
from market_api.readers.interface import Query
from market_api.readers.locks import ReadWriteLock
from market_core.handoff import VersionWatch, write_locked
from market_core.home import DataHome
from market_core.schema import TABLES

log = logging.getLogger(__name__)

T = TypeVar("T")

_TABLES_SQL = f"""
SELECT table_name FROM information_schema.tables
WHERE table_schema = 'main' AND table_name IN ({", ".join("?" * len(TABLES))})
"""


def _temporary(create_sql: str) -> str:
    return create_sql.replace("CREATE TABLE", "CREATE TEMP TABLE", 1)


class _Signal:
    """An attempt's outcome other than a result."""


_BUSY = _Signal()  # a writer holds the file (or it could not be opened); try again shortly
_CLOSED = _Signal()  # no connection is open
_FAILED = _Signal()  # the open connection failed mid-read; close it and try again


class FileReader:
    """The ``Reader`` of the DuckDB file, which keeps only its latest data."""

    def __init__(
        self,
        home: DataHome,
        wait_seconds: float = 10.0,
        retry_seconds: float = 0.025,
        retry_after_seconds: int = 1,
    ) -> None:
        self._home = home
        self._path = home.duckdb_path
        self._version = VersionWatch(home)
        self._wait_seconds = wait_seconds
        self._retry_seconds = retry_seconds
        self._retry_after_seconds = retry_after_seconds
        self._lock = ReadWriteLock()
        self._conn: duckdb.DuckDBPyConnection | None = None
        self._source: duckdb.DuckDBPyConnection | None = None
        self._stand_ins: tuple[str, ...] = ()
        """``CREATE TEMP TABLE`` statements for the tables the open file lacks."""
        self._generation = 0
        self._local = threading.local()
        self._empty: duckdb.DuckDBPyConnection | None = None
        self._empty_lock = threading.Lock()
        self._shut_down = False

    @property
    def is_open(self) -> bool:
        """Whether the API currently holds the DuckDB file (read-only)."""
        return self._conn is not None

    def check_as_of(self, as_of: datetime) -> None:
        """Always refused: the file keeps no history."""
        raise HistoryNotKept()

    def run_at(self, version: str | None, query: Query[T], as_of: datetime | None = None) -> T:
        """``run``: the file has only its latest data, whatever ``version`` asks."""
        if as_of is not None:
            self.check_as_of(as_of)
        return self.run(query)

    def run(self, query: Query[T]) -> T:
        """Run ``query`` on a cursor, waiting up to ``wait_seconds`` while a writer holds the
        file, then raising ``StoreUnavailable``."""
        deadline = time.monotonic() + self._wait_seconds
        while True:
            result = self._attempt(query)
            if not isinstance(result, _Signal):
                return result
            if self._shut_down or time.monotonic() >= deadline:
                raise StoreUnavailable(
                    "the data is being updated and could not be read in time; retry shortly",
                    retry_after_seconds=self._retry_after_seconds,
                )
            time.sleep(self._retry_seconds)

    def data_version(self) -> str | None:
        """The data version the file is at (``market_core.handoff.VersionWatch``)."""
        return self._version.current()

    def poll(self) -> None:
        """Let go of the file if a loader holds the write lock; called from the background
        thread."""
        if self._conn is not None and write_locked(self._home):
            log.debug("a loader holds the write lock; closing the read-only DuckDB connection")
            self.close()

    def close(self) -> None:
        """Close the file's connection (and with it every cursor) once running queries end."""
        with self._lock.exclusive():
            conn, self._conn, self._source = self._conn, None, None
            if conn is not None:
                conn.close()

    def shutdown(self) -> None:
        """Close for good: queries still waiting for the file raise
        ``StoreUnavailable``, nothing reopens."""
        self._shut_down = True
        self.close()
        with self._empty_lock:
            if self._empty is not None:
                self._empty.close()
                self._empty = None

    def _attempt(self, query: Query[T]) -> T | _Signal:
        """One try: query the open connection, or open it and query; ``_BUSY`` if we cannot.

        The loop only covers a close (for a loader) between our open and our query."""
        for _ in range(3):
            if self._shut_down:
                return _BUSY
            if write_locked(self._home):
                if self._conn is not None:
                    self.close()
                return _BUSY
            result = self._query_open(query)
            if result is _FAILED:
                self.close()
                return _BUSY
            if result is not _CLOSED:
                return result
            if not self._path.exists():
                return self._query_empty(query)
            if not self._open():
                return _BUSY
        return _BUSY

    def _query_open(self, query: Query[T]) -> T | _Signal:
        """Run on this thread's cursor of the open connection, or say it is closed."""
        with self._lock.shared():
            if self._source is None:
                return _CLOSED
            try:
                return query(self._cursor())
            except (duckdb.IOException, duckdb.ConnectionException) as exc:
                log.warning("DuckDB read failed (%s); reopening", exc)
                return _FAILED

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        local = self._local
        if getattr(local, "generation", None) != self._generation:
            assert self._source is not None
            local.cursor = self._source.cursor()
            for create in self._stand_ins:
                local.cursor.execute(create)
            local.generation = self._generation
        cursor: duckdb.DuckDBPyConnection = local.cursor
        return cursor

    def _open(self) -> bool:
        """Open the file read-only unless a writer wants it; False if it cannot be had now."""
        with self._lock.exclusive():
            if self._source is not None:
                return True
            if self._shut_down or write_locked(self._home):
                return False
            try:
                conn = duckdb.connect(
                    str(self._path), read_only=True, config={"enable_external_access": False}
                )
            except duckdb.Error as exc:
                # Most often a loader that took the write lock after our check holds the file.
                log.debug("cannot open %s read-only yet: %s", self._path, exc)
                return False
            try:
                rows = conn.execute(_TABLES_SQL, list(TABLES)).fetchall()
            except duckdb.Error as exc:
                log.warning("cannot read the catalog of %s: %s", self._path, exc)
                conn.close()
                return False
            present = {row[0] for row in rows}
            self._conn = self._source = conn
            self._stand_ins = tuple(
                _temporary(sql) for table, sql in TABLES.items() if table not in present
            )
            self._generation += 1
            return True

    def _query_empty(self, query: Query[T]) -> T:
        cursor = self._empty_source().cursor()
        try:
            return query(cursor)
        finally:
            cursor.close()

    def _empty_source(self) -> duckdb.DuckDBPyConnection:
        with self._empty_lock:
            if self._empty is None:
                empty = duckdb.connect(":memory:")
                for create in TABLES.values():
                    empty.execute(create)
                self._empty = empty
            return self._empty
