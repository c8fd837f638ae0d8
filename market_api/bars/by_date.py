"""The daily bars of one data version again, in date order, in a DuckDB file of this process.

The store keeps the bars symbol by symbol, so a question of a few days (the whole market on one
day) decodes almost every block of it; in date order it reads one or two. The copy is built in
a thread of its own when such a question first comes at a data version, a year of bars per
query at that version, and questions of that version read it once it is done; until then, and
for any other version, the store answers. docs/api.md ("Bulk reads") says when it is used and
what it costs.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import duckdb

from market_api.bars.bulk import BulkQuestion, Pinned
from market_api.bars.copies import Builds, TooSmall, copy_name, remove_orphans
from market_api.readers.locks import ReadWriteLock
from market_core.schema import TABLE

log = logging.getLogger(__name__)

T = TypeVar("T")

FOLDER = "api_by_date"
"""The copies' folder under ``MARKET_DATA_HOME``: one file per API process, named by its pid."""
MAX_DAYS = 31
"""A daily question whose window spans at most this many days reads the copy."""
CHUNK = timedelta(days=732)
"""The days of bars one query of a build reads (about 520,000 bars for 1,000 symbols, 30 MB of
Arrow): memory stays at one chunk, and the store is held one query at a time. Each query
decodes most of the store's blocks, so fewer, larger chunks build faster."""
MEMORY_LIMIT = "64MB"
SUFFIX = ".duckdb"
BUILDING = ".building.duckdb"
"""The suffix of a copy being built; a finished one is renamed to ``<pid>-<id>.duckdb``."""
_CONFIG: dict[str, str | bool | int | float | list[str]] = {
    "memory_limit": MEMORY_LIMIT,
    "enable_external_access": False,
}

_RANGE_SQL = f"SELECT min(timestamp), max(timestamp) FROM {TABLE}"
_COUNT_SQL = f"SELECT count(*) FROM {TABLE}"
_CHUNK_SQL = f"""SELECT timestamp, symbol, open, high, low, close, volume FROM {TABLE}
WHERE timestamp >= $low AND timestamp < $high ORDER BY timestamp, symbol"""


def suits(question: BulkQuestion) -> bool:
    """Whether ``question`` reads few enough days of ``ohlcv_data`` for the copy to pay."""
    start, end = question.start, question.end
    if question.interval.intraday or question.as_of is not None or not (start and end):
        return False
    return (_day(end) - _day(start)).days < MAX_DAYS


def _day(moment: date) -> date:
    return moment.date() if isinstance(moment, datetime) else moment


class DateOrdered:
    """The copy of one data version, or none; ``run`` reads it, ``want`` has one built."""

    def __init__(self, folder: Path, min_bars: int = 0) -> None:
        self._folder = folder
        self._min_bars = min_bars
        """Below this many bars a version gets no copy: scanning the store is as quick."""
        self._lock = ReadWriteLock()
        """Questions hold it shared; swapping in a new copy and closing hold it exclusive."""
        self._conn: duckdb.DuckDBPyConnection | None = None
        self._path: Path | None = None
        self._version: tuple[str | None] | None = None
        self._generation = 0
        self._local = threading.local()
        self._builds = Builds()

    def runner(self, version: str | None, store: Pinned) -> Pinned | None:
        """Runs queries on the copy of ``version`` if that is the one held (None if not); on
        ``store``, which reads the same bars, once a newer copy replaced it."""
        if self._version != (version,):
            return None

        def run(query: Callable[[duckdb.DuckDBPyConnection], Any]) -> Any:
            with self._lock.shared():
                if self._version == (version,) and self._conn is not None:
                    return query(self._cursor())
            return store(query)

        return run

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        local = self._local
        if getattr(local, "generation", None) != self._generation:
            assert self._conn is not None
            local.cursor = self._conn.cursor()
            local.generation = self._generation
        cursor: duckdb.DuckDBPyConnection = local.cursor
        return cursor

    def want(self, version: str | None, run: Pinned) -> None:
        """Build the copy of ``version`` (read through ``run``) in a thread, unless it is held,
        being built, or failed before."""
        key = (version,)
        self._builds.start(key, self._version, lambda: self._build(key, run), "market-api-by-date")

    def _build(self, key: tuple[str | None], run: Pinned) -> None:
        name = copy_name()
        building, path = self._folder / f"{name}{BUILDING}", self._folder / f"{name}{SUFFIX}"
        started = time.monotonic()

        def make() -> duckdb.DuckDBPyConnection:
            if self._min_bars and _bars(run) < self._min_bars:
                raise TooSmall
            self._folder.mkdir(parents=True, exist_ok=True)
            remove_orphans(self._folder, f"*{SUFFIX}*", self._path, _unlink)
            with duckdb.connect(str(building), config=_CONFIG) as conn:
                _fill(conn, run, self._builds.stop)
                conn.execute("CHECKPOINT")
            building.rename(path)  # only a finished copy has its final name
            return duckdb.connect(str(path), read_only=True, config=_CONFIG)

        conn = self._builds.attempt(key, "date-ordered", make, (building, path), _unlink)
        if conn is None:
            return
        log.info("date-ordered copy of %s built in %.1f s", key[0], time.monotonic() - started)
        self._swap(key, conn, path)

    def _swap(self, key: tuple[str | None], conn: duckdb.DuckDBPyConnection, path: Path) -> None:
        with self._lock.exclusive():
            old, old_path = self._conn, self._path
            if self._builds.stop.is_set():
                old, old_path = conn, path
            else:
                self._conn, self._path, self._version = conn, path, key
                self._generation += 1
        if old is not None:
            old.close()
        if old_path is not None:
            _unlink(old_path)
        with self._builds.lock:
            self._builds.done()

    def close(self) -> None:
        """Stop a build and let go of the copy (its file removed)."""
        self._builds.stop.set()
        with self._lock.exclusive():
            conn, path, self._conn, self._path, self._version = (
                self._conn,
                self._path,
                None,
                None,
                None,
            )
        if conn is not None:
            conn.close()
        if path is not None:
            _unlink(path)


def _bars(run: Pinned) -> int:
    row = run(lambda cur: cur.execute(_COUNT_SQL).fetchone())
    return int(row[0]) if row else 0


def _fill(conn: duckdb.DuckDBPyConnection, run: Pinned, stop: threading.Event) -> None:
    """Every bar, a chunk of days per query, each chunk in (timestamp, symbol) order."""
    low, high = run(lambda cur: cur.execute(_RANGE_SQL).fetchone())
    conn.execute(
        f"CREATE TABLE {TABLE} (timestamp TIMESTAMP, symbol VARCHAR, open DOUBLE, "
        "high DOUBLE, low DOUBLE, close DOUBLE, volume BIGINT)"
    )
    at = low
    while at is not None and at <= high:
        if stop.is_set():
            raise InterruptedError("the API is shutting down")
        values = {"low": at, "high": at + CHUNK}
        chunk = run(lambda cur: cur.execute(_CHUNK_SQL, values).to_arrow_table())  # noqa: B023
        conn.register("chunk", chunk)
        try:
            conn.execute(f"INSERT INTO {TABLE} SELECT * FROM chunk")
        finally:
            conn.unregister("chunk")
        at += CHUNK


def _unlink(path: Path) -> None:
    for leftover in (path, path.with_name(path.name + ".wal")):
        with contextlib.suppress(OSError):
            leftover.unlink()
