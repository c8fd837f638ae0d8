"""The lake reader: the shared DuckLake attached read-only, each cursor pinned to a snapshot,
and a local copy of the lake (``replica.LakeCopy``) that answers the copy's snapshot.

The lake's current snapshot id is the data version; once the copy has caught up, the version is
the copy's snapshot and questions of it read the copy, without the catalog. Every query of one
answer reads the snapshot its version names: on the copy, which its follower never changes
while a question runs, or on the lake through temporary views that shadow the tables on the
cursor; ``as_of``, and a version the copy has moved past (a page token's), read the lake. The
why is in docs/design/api-internals.md ("The lake reader", "The lake's local copy").
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import duckdb

from market_api.readers.errors import SnapshotNotFound, StoreUnavailable
from market_api.readers.interface import Query
from market_api.readers.locks import ReadWriteLock
from market_api.readers.outage import Outage
from market_api.readers.replica import COPY_FOLDER, LakeCopy, NotHere
from market_core.home import DataHome
from market_core.lake import LAKE_ALIAS, LakeError, LakeSettings, connect, snapshot_id
from market_core.schema import (
    ACTIONS_TABLE,
    CHANGES_TABLE,
    COMMITS_TABLE,
    CREATE_CHANGES_SQL,
    CREATE_COMMITS_SQL,
    CREATE_INTRADAY_SQL,
    CREATE_LISTINGS_SQL,
    INTRADAY_TABLE,
    LISTINGS_TABLE,
    TABLE,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

_PIN_SQL = (
    "CREATE OR REPLACE TEMP VIEW {table} AS "
    "SELECT * FROM {lake}.main.{table} AT (VERSION => {snapshot})"
)

_OPTIONAL_TABLES = {
    INTRADAY_TABLE: CREATE_INTRADAY_SQL,
    CHANGES_TABLE: CREATE_CHANGES_SQL,
    COMMITS_TABLE: CREATE_COMMITS_SQL,
    LISTINGS_TABLE: CREATE_LISTINGS_SQL,
}
"""Tables a snapshot may lack: a lake made before they existed gets them at its first write by
code that knows them (``market_core.lake.connect``), and a snapshot older than that never has
them. Read from such a snapshot, each is empty (a temporary table of its schema), so its
answers are "no bars" and not an error; ``ohlcv_data`` and ``corporate_actions`` are always
there from the lake's first snapshot on."""


def _empty_sql(table: str, create_sql: str) -> tuple[str, str]:
    """The empty stand-in of ``table``: a temporary table of its schema, and the view on it."""
    empty = f"empty_{table}"
    create = create_sql.replace(
        f"CREATE TABLE IF NOT EXISTS {table}", f"CREATE TEMP TABLE IF NOT EXISTS {empty}", 1
    )
    if create == create_sql:  # pragma: no cover - schema.py's statement changed shape
        raise AssertionError(f"cannot make an empty stand-in of {table}")
    return create, f"CREATE OR REPLACE TEMP VIEW {table} AS SELECT * FROM temp.main.{empty}"


_EMPTY_SQL = {table: _empty_sql(table, sql) for table, sql in _OPTIONAL_TABLES.items()}
_PINNED = (TABLE, ACTIONS_TABLE, *_OPTIONAL_TABLES)
_MISSING = (duckdb.CatalogException, duckdb.InvalidInputException)
"""What a view of a table the snapshot lacks raises (no such table, or not at that version)."""

_AS_OF_SQL = f"""
SELECT max(snapshot_id) FILTER (WHERE snapshot_time <= $as_of), min(snapshot_time)
FROM ducklake_snapshots('{LAKE_ALIAS}')
"""

_UNREACHABLE = (duckdb.IOException, duckdb.ConnectionException, LakeError)
"""What a lost or unreachable catalog (or data folder) raises: reconnect and try again. A
query running when the catalog goes away may also fail otherwise (seen: a bare ``duckdb.Error``
"Failed to prepare COPY", ``InvalidInputException`` "fetch from an unsuccessful query result",
``InternalException``); those count as unreachable when the catalog does not answer a probe."""

CONNECT_TIMEOUT_SECONDS = 2
"""libpq's connect timeout for the catalog (its minimum), unless the URL sets one: a host that
does not answer costs a miss this long (twice: the read-only attach, then the read-write one
that would create a missing lake), not the kernel's minutes."""
UNREACHABLE_DETAIL = "the shared lake's catalog cannot be reached; retry after Retry-After seconds"


class _Unreachable:
    """An attempt that could not reach the lake."""


_UNREACHED = _Unreachable()


class LakeReader:
    """The ``Reader`` of the lake: one in-memory DuckDB connection with the lake attached
    read-only, its cursors pinned to snapshots, and the local copy in front of it.

    ``copy_folder``: where the copy lives (``$MARKET_DATA_HOME/lake_copy`` if None);
    ``keep_copy=False`` reads the lake for every question."""

    def __init__(
        self,
        settings: LakeSettings,
        wait_seconds: float = 10.0,
        retry_seconds: float = 0.025,
        retry_after_seconds: int = 1,
        refresh_seconds: float = 0.1,
        reconnect_seconds: float = 1.0,
        copy_folder: Path | None = None,
        keep_copy: bool = True,
    ) -> None:
        self._settings = (
            settings
            if settings.connect_timeout_seconds is not None
            else dataclasses.replace(settings, connect_timeout_seconds=CONNECT_TIMEOUT_SECONDS)
        )
        self._wait_seconds = wait_seconds
        self._retry_seconds = retry_seconds
        self._retry_after_seconds = retry_after_seconds
        self._refresh_seconds = refresh_seconds
        """How often ``poll`` asks the catalog for its newest snapshot: well inside the 2 s in
        which every replica must serve a commit, at ~10 catalog queries a second."""
        self._reconnect_seconds = reconnect_seconds
        """How often a lost catalog is tried again. Meanwhile misses get a 503 at once, not
        after ``wait_seconds``: each would hold a worker thread for nothing."""
        self._outage = Outage(log, f"the shared lake's catalog ({settings.redacted_url})")
        self._lock = ReadWriteLock()
        """Queries hold it shared, connecting and closing exclusive."""
        self._conn: duckdb.DuckDBPyConnection | None = None
        self._generation = 0
        self._local = threading.local()
        self._version: int | None = None
        self._refreshed_at = float("-inf")
        self._connect_after = float("-inf")
        self._shut_down = False
        self._copy = (
            LakeCopy(self._settings, copy_folder or DataHome.from_env().root / COPY_FOLDER)
            if keep_copy
            else None
        )

    @property
    def is_open(self) -> bool:
        """Whether the lake is attached right now."""
        return self._conn is not None

    def data_version(self) -> str | None:
        """The copy's snapshot while it serves, else the newest snapshot id ``poll`` saw
        (``None`` until the lake was first reached)."""
        copied = None if self._copy is None else self._copy.serving()
        version = self._version if copied is None else copied
        return None if version is None else str(version)

    def poll(self) -> None:
        """Learn the lake's newest snapshot (at most every ``refresh_seconds``) and ask the
        copy to follow; from the background thread. A failure keeps the last known version and
        is retried."""
        if self._shut_down or time.monotonic() - self._refreshed_at < self._refresh_seconds:
            return
        newest = self._attempt(self._refresh)
        if self._copy is not None and isinstance(newest, int):
            self._copy.want(newest)

    def check_as_of(self, as_of: datetime) -> None:
        """The lake keeps its snapshots: any time may be asked (one before the oldest raises
        ``SnapshotNotFound`` when it is read)."""

    def run(self, query: Query[T]) -> T:
        """Run ``query`` at the current data version (``StoreReader.run``)."""
        return self.run_at(self.data_version(), query)

    def run_at(self, version: str | None, query: Query[T], as_of: datetime | None = None) -> T:
        """Run ``query`` with the tables of snapshot ``version`` (None: the newest), or with
        ``as_of`` of the newest snapshot committed by then, never one after ``version``.

        The copy answers when it holds that snapshot and the catalog was reachable at the last
        look (while it is not, questions get a 503 as they always did). A read of the lake that
        failed is tried again on a new connection, for up to ``wait_seconds``;
        ``StoreUnavailable`` as soon as the catalog refuses a new connection."""
        snapshot = None if version is None else int(version)
        if as_of is None and self._copy is not None and self._conn is not None:
            at = self._copy.serving() if snapshot is None else snapshot
            if at is not None:
                copied = self._copy.run(at, query)
                if not isinstance(copied, NotHere):
                    return copied
        deadline = time.monotonic() + self._wait_seconds
        while True:
            result = self._attempt(lambda cur: self._answer(snapshot, as_of, query, cur))
            if not isinstance(result, _Unreachable):
                return result
            if self._shut_down or self._known_down() or time.monotonic() >= deadline:
                raise StoreUnavailable(
                    UNREACHABLE_DETAIL, retry_after_seconds=self._retry_after_seconds
                )
            time.sleep(self._retry_seconds)

    def close(self) -> None:
        """Detach the lake (and every cursor with it) once running queries end; the next query
        or poll connects again."""
        with self._lock.exclusive():
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()

    def shutdown(self) -> None:
        """Close for good: waiting requests get a 503, nothing connects again."""
        self._shut_down = True
        if self._copy is not None:
            self._copy.stop()
        self.close()

    def _answer(
        self,
        snapshot: int | None,
        as_of: datetime | None,
        query: Query[T],
        cursor: duckdb.DuckDBPyConnection,
    ) -> T:
        """Pin ``snapshot`` (the newest if None; ``as_of``'s if given) and run ``query``."""
        if snapshot is None:
            snapshot = self._refresh(cursor)
        if as_of is not None:
            snapshot = _snapshot_at(cursor, as_of, snapshot)
        self._pin(cursor, snapshot, as_of)
        return query(cursor)

    def _attempt(self, work: Callable[[duckdb.DuckDBPyConnection], T]) -> T | _Unreachable:
        """One try of ``work`` on this thread's cursor, connecting first if need be."""
        if self._shut_down or not self._connected():
            return _UNREACHED
        with self._lock.shared():
            conn = self._conn
            if conn is None:
                return _UNREACHED
            try:
                return work(self._cursor(conn))
            except _UNREACHABLE as exc:
                failure: Exception = exc
            except duckdb.Error as exc:
                if _catalog_answers(conn):
                    raise  # the query's own failure, not the catalog's
                failure = exc
        self._outage.failed(f"a read failed: {self._settings.redact(str(failure))}")
        self.close()
        return _UNREACHED

    def _known_down(self) -> bool:
        """The last try to connect failed, and the next is not due yet."""
        return self._conn is None and time.monotonic() < self._connect_after

    def _refresh(self, cursor: duckdb.DuckDBPyConnection) -> int:
        """The catalog's newest snapshot, remembered as the data version."""
        version = snapshot_id(cursor)
        self._refreshed_at = time.monotonic()
        if version != self._version:
            log.debug("lake snapshot %s -> %s", self._version, version)
            self._version = version
        return version

    def _pin(
        self, cursor: duckdb.DuckDBPyConnection, snapshot: int, as_of: datetime | None
    ) -> None:
        """Point this cursor's tables at ``snapshot`` (those it lacks of ``_OPTIONAL_TABLES``
        at empty stand-ins).

        All views in one transaction: each autocommit statement would start a transaction of
        its own, a catalog round trip each (five views cost about three times two in their own
        transactions, measured on loopback PostgreSQL). A table missing at the snapshot
        aborts that transaction; the views are then made one by one."""
        local = self._local
        if local.pinned == snapshot:
            return
        local.pinned = None
        cursor.begin()
        try:
            for table in _PINNED:
                cursor.execute(_pin(table, snapshot))
            cursor.commit()
        except _MISSING:
            cursor.rollback()
            self._pin_each(cursor, snapshot, as_of)
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                cursor.rollback()
            raise
        local.pinned = snapshot

    def _pin_each(
        self, cursor: duckdb.DuckDBPyConnection, snapshot: int, as_of: datetime | None
    ) -> None:
        """``_pin`` at a snapshot that lacks a table: the two that every snapshot of a usable
        lake has, then the optional ones or their stand-ins."""
        try:
            for table in (TABLE, ACTIONS_TABLE):
                cursor.execute(_pin(table, snapshot))
        except _MISSING as exc:
            if as_of is None:
                raise
            # A snapshot before the lake's tables were created, or one expired meanwhile.
            raise SnapshotNotFound(as_of, usable=True) from exc
        for table, empty in _EMPTY_SQL.items():
            try:
                cursor.execute(_pin(table, snapshot))
            except _MISSING:
                for sql in empty:
                    cursor.execute(sql)

    def _cursor(self, conn: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
        local = self._local
        if getattr(local, "generation", None) != self._generation:
            local.cursor = conn.cursor()
            local.pinned = None
            local.generation = self._generation
        cursor: duckdb.DuckDBPyConnection = local.cursor
        return cursor

    def _connected(self) -> bool:
        """Attach the lake unless it is attached; False if it cannot be reached now (tried
        again after ``reconnect_seconds``)."""
        if self._conn is not None:
            return True
        with self._lock.exclusive():
            if self._conn is not None:
                return True
            if self._shut_down or time.monotonic() < self._connect_after:
                return False
            try:
                conn = connect(self._settings, read_only=True)
            except LakeError as exc:  # messages from market_core.lake are redacted already
                self._outage.failed(str(exc))
                self._connect_after = time.monotonic() + self._reconnect_seconds
                return False
            self._conn = conn
            self._generation += 1
        self._outage.ended()
        return True


def _catalog_answers(conn: duckdb.DuckDBPyConnection) -> bool:
    """Whether the catalog answers a question now, on a cursor of its own (``conn`` may have
    been invalidated by the failure that makes us ask)."""
    try:
        cursor = conn.cursor()
        try:
            snapshot_id(cursor)
        finally:
            cursor.close()
    except duckdb.Error:
        return False
    return True


def _pin(table: str, snapshot: int) -> str:
    return _PIN_SQL.format(table=table, lake=LAKE_ALIAS, snapshot=int(snapshot))


def _snapshot_at(cursor: duckdb.DuckDBPyConnection, as_of: datetime, newest: int) -> int:
    """The newest snapshot committed at or before ``as_of`` (a naive time is UTC), never one
    after ``newest``: the answer is as of the data version it is filed under."""
    moment = as_of if as_of.tzinfo is not None else as_of.replace(tzinfo=UTC)
    row = cursor.execute(_AS_OF_SQL, {"as_of": moment}).fetchone()
    found, oldest = (None, None) if row is None else row
    if found is None:
        raise SnapshotNotFound(as_of, oldest)
    return min(int(found), newest)
