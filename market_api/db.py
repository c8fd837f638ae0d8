"""The API's side of the DuckDB hand-off (``market_core.handoff``): one read-only connection.

``Database`` is the file implementation of ``market_core.store.StoreReader``. DuckDB lets one
process hold the file read-write or many hold it read-only, never both. The API keeps a single
long-lived read-only connection, because opening one costs tens of milliseconds and a query on
an open one a few. It lets go as soon as a loader holds the write lock, seen either by the
background poll (``poll``, every ~25 ms) or by the check before every query, and it does not
reopen while the lock is held. The next query after the loader is done reopens it. Both checks
only ask the kernel: a dead loader's lock is already gone, and nothing on disk changes.

Queries run concurrently on per-thread cursors of that connection. A readers-writer lock keeps
``close`` from pulling the connection from under a running query: queries hold it shared,
opening and closing hold it exclusive, and a waiting close blocks new queries so that it happens
as soon as the running ones finish.

Before the first load there may be no file, or a file without the tables: a file loaded before
corporate actions existed has ``ohlcv_data`` but no ``corporate_actions``, and one whose first
load was of corporate actions only the reverse; a file from before intraday bars and the change
log lacks ``ohlcv_intraday``, ``bar_changes`` and ``bar_commits``. Queries then run against
empty tables of the same schema (in memory without a file; with one, a temporary table per
cursor for each missing table: temporary objects are per cursor, and the only thing a read-only
connection may create), so every endpoint answers "no data" or "no events" through the same SQL
instead of special cases.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import duckdb

from market_api.errors import DataUnavailable
from market_core.handoff import VersionWatch, write_locked
from market_core.home import DataHome
from market_core.schema import (
    ACTIONS_TABLE,
    CHANGES_TABLE,
    COMMITS_TABLE,
    CREATE_ACTIONS_SQL,
    CREATE_CHANGES_SQL,
    CREATE_COMMITS_SQL,
    CREATE_INTRADAY_SQL,
    CREATE_TABLE_SQL,
    INTRADAY_TABLE,
    TABLE,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

_TABLES = {
    TABLE: CREATE_TABLE_SQL,
    ACTIONS_TABLE: CREATE_ACTIONS_SQL,
    INTRADAY_TABLE: CREATE_INTRADAY_SQL,
    CHANGES_TABLE: CREATE_CHANGES_SQL,
    COMMITS_TABLE: CREATE_COMMITS_SQL,
}
"""Every table the queries read, with its schema."""

_TABLES_SQL = f"""
SELECT table_name FROM information_schema.tables
WHERE table_schema = 'main' AND table_name IN ({", ".join("?" * len(_TABLES))})
"""


def _temporary(create_sql: str) -> str:
    return create_sql.replace("CREATE TABLE", "CREATE TEMP TABLE", 1)


class ReadWriteLock:
    """Many shared holders or one exclusive holder; a waiting exclusive holder goes first."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class _Signal:
    """An attempt's outcome other than a result."""


_BUSY = _Signal()  # a writer holds the file (or it could not be opened); try again shortly
_CLOSED = _Signal()  # no connection is open
_FAILED = _Signal()  # the open connection failed mid-read; close it and try again


class Database:
    """The read-only connection manager; ``run`` is the only way queries reach DuckDB."""

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

    def run(self, query: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Run ``query`` on a cursor, waiting (bounded) while a writer holds the file.

        Blocking: call it from a worker thread. Raises ``DataUnavailable`` after
        ``wait_seconds`` without a chance to read."""
        deadline = time.monotonic() + self._wait_seconds
        while True:
            result = self._attempt(query)
            if not isinstance(result, _Signal):
                return result
            if self._shut_down or time.monotonic() >= deadline:
                raise DataUnavailable(
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
        """Close for good: requests still waiting for the file get a 503, nothing reopens."""
        self._shut_down = True
        self.close()
        with self._empty_lock:
            if self._empty is not None:
                self._empty.close()
                self._empty = None

    def _attempt(self, query: Callable[[duckdb.DuckDBPyConnection], T]) -> T | _Signal:
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

    def _query_open(self, query: Callable[[duckdb.DuckDBPyConnection], T]) -> T | _Signal:
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
                rows = conn.execute(_TABLES_SQL, list(_TABLES)).fetchall()
            except duckdb.Error as exc:
                log.warning("cannot read the catalog of %s: %s", self._path, exc)
                conn.close()
                return False
            present = {row[0] for row in rows}
            self._conn = self._source = conn
            self._stand_ins = tuple(
                _temporary(sql) for table, sql in _TABLES.items() if table not in present
            )
            self._generation += 1
            return True

    def _query_empty(self, query: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        cursor = self._empty_source().cursor()
        try:
            return query(cursor)
        finally:
            cursor.close()

    def _empty_source(self) -> duckdb.DuckDBPyConnection:
        with self._empty_lock:
            if self._empty is None:
                empty = duckdb.connect(":memory:")
                for create in _TABLES.values():
                    empty.execute(create)
                self._empty = empty
            return self._empty
