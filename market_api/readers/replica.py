"""The lake's local copy: a DuckDB file under the replica's own data home holding the lake's tables
as of one snapshot, brought forward commit by commit from DuckLake's change feed by a thread of
its own. A question of that snapshot reads the file, as the embedded server reads its own, and
sends the catalog nothing. The why, the costs and the failure cases are in
docs/design/api-internals.md ("The lake's local copy").
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import duckdb

from market_api.readers.locks import ReadWriteLock
from market_core.lake import (
    LAKE_ALIAS,
    LAKE_TABLES_SQL,
    LakeError,
    LakeSettings,
    attach_read_only,
    catalog_reachable,
)
from market_core.schema import (
    ACTIONS_TABLE,
    CHANGES_TABLE,
    COMMITS_TABLE,
    INTRADAY_TABLE,
    LISTINGS_KEY,
    LISTINGS_TABLE,
    TABLE,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

COPY_FOLDER = "lake_copy"
"""The copy's folder under ``MARKET_DATA_HOME``: per machine, never shared."""
COPY_FILE = "copy.duckdb"
BUILDING_FILE = "copy.building.duckdb"
MEMORY_LIMIT = "1GB"
"""DuckDB's memory for the copy (its buffer pool, a build's and a catch-up's work); beyond it a
build spills to ``<folder>/tmp``. The 5.2M-bar copy is a 116 MB file."""
MAX_LAG_SECONDS = 0.5
"""How long the copy may stay behind a commit the reader has seen and still answer: past this
(a huge commit, a rebuild) answers come from the lake at its newest snapshot until the copy
catches up, so a commit is never served later than this plus the reader's poll."""
CHECKPOINT_BYTES = 16 * 2**20
"""The follower folds the copy's write-ahead log into the file past this (DuckDB's own
threshold, which is set far higher for the copy so that no commit does it)."""
RETRY_SECONDS = 1.0
"""After a failed step the follower waits at least this long, doubling up to a minute."""

KEYS: dict[str, tuple[str, ...]] = {
    TABLE: ("symbol", "timestamp"),
    ACTIONS_TABLE: ("symbol", "ex_date", "kind"),
    INTRADAY_TABLE: ("symbol", "interval", "timestamp"),
    CHANGES_TABLE: ("commit_id", "symbol", "interval", "timestamp"),
    COMMITS_TABLE: ("commit_id",),
    LISTINGS_TABLE: LISTINGS_KEY,
}
"""What identifies a row of each copied table: the writers' upsert keys (DuckLake enforces no
UNIQUE, the writers' MERGE and write lock do), and for the change log a commit's bar. Rows are
matched by these, not by DuckLake's row ids: in DuckLake 1.5.5 merging a file that a flush of
inlined rows wrote can renumber rows (two rows then share an id)."""

_STATE_TABLE = "lake_copy_state"
_FORMAT = hashlib.sha256(
    json.dumps([LAKE_TABLES_SQL, sorted(KEYS.items()), 1]).encode()
).hexdigest()[:16]
"""Changes with the tables' schemas or the keys: a copy of another format is built again."""

_TABLE_IDS_SQL = f"SELECT table_id, table_name, table_uuid FROM ducklake_table_info('{LAKE_ALIAS}')"
_METADATA = f"__ducklake_metadata_{LAKE_ALIAS}"
_SNAPSHOTS_SQL = f"""
SELECT s.snapshot_id, c.changes_made
FROM {_METADATA}.ducklake_snapshot AS s
LEFT JOIN {_METADATA}.ducklake_snapshot_changes AS c USING (snapshot_id)
WHERE s.snapshot_id > $after AND s.snapshot_id <= $upto
ORDER BY s.snapshot_id
"""
"""The commits after the copy's snapshot and what each changed: DuckLake's catalog tables, as
its specification describes them (``ducklake_snapshots()`` reads every snapshot the lake keeps,
~80 ms at 6,000; this asks PostgreSQL for the few new ones)."""

_CHANGE = re.compile(r'([a-z_]+):("(?:[^"]|"")*"(?:\."(?:[^"]|"")*")*|[^,]*)')
_INSERTS = frozenset({"inserted_into_table", "inlined_insert"})
_DELETES = frozenset({"deleted_from_table", "inlined_delete"})
_QUIET = frozenset(
    {"inline_flush", "merge_adjacent", "compacted_table", "created_schema", "created_view",
     "dropped_view", "altered_view"}
)  # fmt: skip
"""Commits that move rows between files or touch no table of ours: nothing to copy."""
_RESHAPE = frozenset({"created_table", "dropped_table", "altered_table", "dropped_schema"})
"""Commits that change a table itself: the copy is built again."""

_MISSING = (duckdb.CatalogException, duckdb.InvalidInputException)
"""What reading a table the snapshot lacks raises."""


class NotHere:
    """The copy does not hold the snapshot asked for."""


NOT_HERE = NotHere()


class _LocalFailure(Exception):
    """The copy's own file could not be opened or made (disk full, no permission)."""


class _Rebuild(Exception):
    """The change feed cannot bring the copy forward (its snapshot expired, a table was
    recreated or altered, the copy is of another lake or format): build it again."""


class LakeCopy:
    """The copy: read by request threads (``run``), written by its follower thread only."""

    def __init__(
        self,
        settings: LakeSettings,
        folder: Path,
        *,
        memory_limit: str = MEMORY_LIMIT,
        max_lag_seconds: float = MAX_LAG_SECONDS,
        retry_seconds: float = RETRY_SECONDS,
    ) -> None:
        self._settings = settings
        self._folder = folder
        self._memory_limit = memory_limit
        self._max_lag_seconds = max_lag_seconds
        self._retry_seconds = retry_seconds
        self._lock = ReadWriteLock()
        """Questions hold it shared; the follower's commits, swapping in a new file and closing
        hold it exclusive."""
        self._conn: duckdb.DuckDBPyConnection | None = None
        self._building: duckdb.DuckDBPyConnection | None = None
        self._lake_attached = False
        self._tables: dict[int, str] = {}
        """The lake's table ids of the copied tables."""
        self._snapshot: int | None = None
        self._serving = False
        """The copy reached the newest snapshot the reader had seen (after opening or a build);
        until then, and while it is rebuilt, answers come from the lake."""
        self._wanted: int | None = None
        self._behind_since: float | None = None
        self._generation = 0
        self._local = threading.local()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._failures = 0
        self._disabled = False
        self._lag_lock = threading.Lock()
        """``want`` (the watch thread) and the follower both move ``_behind_since``."""

    @property
    def snapshot(self) -> int | None:
        """The snapshot the copy holds (None before it is opened or built)."""
        return self._snapshot

    def serving(self) -> int | None:
        """The snapshot questions should be answered at from the copy: None while it is not
        built, not caught up, or further behind the lake than ``max_lag_seconds``."""
        if not self._serving:
            return None
        behind = self._behind_since
        if behind is not None and time.monotonic() - behind > self._max_lag_seconds:
            return None
        return self._snapshot

    def want(self, snapshot: int) -> None:
        """The lake's newest snapshot, as the reader's poll saw it: bring the copy there (its
        thread starts at the first call)."""
        if self._disabled or self._stop.is_set():
            return
        with self._lag_lock:
            self._wanted = snapshot
            if snapshot != self._snapshot and self._behind_since is None:
                self._behind_since = time.monotonic()
        if snapshot != self._snapshot:
            self._wake.set()
        if self._thread is None:
            with self._start_lock:
                if self._thread is None and not self._stop.is_set():
                    self._thread = threading.Thread(
                        target=self._follow, name="market-api-lake-copy", daemon=True
                    )
                    self._thread.start()

    def run(self, snapshot: int, query: Callable[[duckdb.DuckDBPyConnection], T]) -> T | NotHere:
        """``query`` on the copy if it holds ``snapshot``, else ``NOT_HERE``. The follower
        commits only while no question runs (the lock), so every statement of ``query`` reads
        that snapshot, with no transaction of its own to pay for (a third of a question)."""
        if self._snapshot != snapshot:
            return NOT_HERE
        with self._lock.shared():
            conn = self._conn
            if conn is None or self._snapshot != snapshot:
                return NOT_HERE
            return query(self._cursor(conn))

    def stop(self) -> None:
        """Stop following (a build under way is interrupted) and close the file."""
        self._stop.set()
        self._wake.set()
        building = self._building
        if building is not None:
            with contextlib.suppress(duckdb.Error):
                building.interrupt()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=30)
        with self._lock.exclusive():
            self._close_conn()

    def _cursor(self, conn: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
        local = self._local
        if getattr(local, "generation", None) != self._generation:
            local.cursor = conn.cursor()
            local.generation = self._generation
        cursor: duckdb.DuckDBPyConnection = local.cursor
        return cursor

    # The follower thread.

    def _follow(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            target = self._wanted
            if self._stop.is_set() or target is None:
                continue
            if target == self._snapshot and self._serving:
                continue
            try:
                self._bring_to(target)
            except Exception as exc:  # the thread must outlive any one failure
                if self._stop.is_set():
                    break
                self._stop.wait(self._failed(exc))
                self._wake.set()  # try again, at the newest snapshot wanted by then
            else:
                self._failures = 0

    def _failed(self, exc: Exception) -> float:
        """Deal with a failed step; the seconds to wait before the next.

        A lost catalog is the reader's to tell (it logs the outage once): here only the lake's
        attachment goes, to be made again each ``retry_seconds``. Anything else is logged, and
        the copy is built again from the lake, with a backoff that doubles to a minute."""
        cause = exc.__cause__ if isinstance(exc, _LocalFailure) else exc
        if isinstance(cause, duckdb.IOException) and "lock" in str(cause).lower():
            log.warning("another process on this data home keeps the lake copy (%s); this one "
                        "answers from the lake", cause)  # fmt: skip
            self._disabled = True
            self._stop.set()
            return 0.0
        if not isinstance(exc, _LocalFailure) and self._catalog_lost(exc):
            log.debug("the lake copy could not read the lake: %s", self._settings.redact(str(exc)))
            self._detach_lake()
            return self._retry_seconds
        self._failures += 1
        backoff = min(60.0, self._retry_seconds * 2 ** min(self._failures, 6))
        if isinstance(exc, _LocalFailure):
            log.warning("%s; answering from the lake, trying again in %.0f s", exc, backoff)
            return backoff
        if self._failures == 1 and self._lake_attached:
            # The catalog is back, but the attachment may hold connections from before.
            log.debug("the lake copy failed (%s); trying again on a new attachment", exc)
            self._detach_lake()
            return self._retry_seconds
        log.exception("the lake copy could not follow the lake; building it again")
        self._serving = False
        with self._lock.exclusive():
            self._close_conn()
            self._snapshot = None
        _remove(self._folder / COPY_FILE)
        return backoff

    def _catalog_lost(self, exc: Exception) -> bool:
        """A failure that was the catalog's: the catalog does not answer now (a lost catalog
        also fails reads with errors of other kinds than a lost connection's)."""
        return isinstance(exc, duckdb.Error | LakeError) and not catalog_reachable(self._settings)

    def _bring_to(self, target: int) -> None:
        """Open the copy left by a previous run, or build one, then apply the commits up to
        ``target``; rebuilt when the change feed cannot say what changed."""
        if self._conn is None:
            self._open_existing(target)
        try:
            if self._snapshot is None or self._snapshot > target:
                self._build(target)
            elif self._snapshot < target:
                self._catch_up(target)
        except _Rebuild as why:
            log.info("the lake copy is built again: %s", why)
            self._serving = False
            self._build(target)
        with self._lag_lock:
            if self._wanted == target:
                self._behind_since = None
                self._serving = True
                return
        self._wake.set()  # a newer commit came meanwhile

    def _open_existing(self, target: int) -> None:
        """The copy a previous run left, if it is of this lake and format and no newer than
        the lake; else nothing (and its files removed)."""
        path = self._folder / COPY_FILE
        if not path.exists():
            return
        conn = self._connect(path)
        try:
            snapshot = self._kept_snapshot(conn, target)
        except BaseException:
            conn.close()
            raise
        if snapshot is None:
            log.info("the lake copy in %s is of another lake or format; building a new one", path)
            conn.close()
            _remove(path)
            return
        with self._lock.exclusive():
            self._install(conn, snapshot)
        log.info("lake copy at snapshot %s opened; catching up to %s", snapshot, target)

    def _kept_snapshot(self, conn: duckdb.DuckDBPyConnection, target: int) -> int | None:
        try:
            state = conn.execute(f"SELECT snapshot, format, tables FROM {_STATE_TABLE}").fetchone()
        except duckdb.CatalogException:
            return None
        if state is None or state[1] != _FORMAT or int(state[0]) > target:
            return None
        self._attach_lake(conn)
        return int(state[0]) if json.loads(state[2]) == self._identity(conn) else None

    def _build(self, target: int) -> None:
        """Copy every table as of ``target`` into a new file, then swap it in (answers come
        from the lake meanwhile). Rows are written in key order: a question reads one symbol's
        range, and DuckDB's zone maps then skip every row group but its own (a parallel copy in
        the lake's order interleaves symbols, and a one-year question took twice as long)."""
        started = time.perf_counter()
        path = self._folder / BUILDING_FILE
        _remove(path)
        conn = self._building = self._connect(path)
        try:
            self._attach_lake(conn)
            identity = self._identity(conn)
            for table, create in LAKE_TABLES_SQL:  # nobody reads this file yet: no transaction
                conn.execute(create)
                with contextlib.suppress(*_MISSING):  # not at this snapshot: stays empty
                    conn.execute(
                        f"INSERT INTO main.{table} BY NAME "
                        f"SELECT * FROM {LAKE_ALIAS}.main.{table} AT (VERSION => {int(target)}) "
                        f"ORDER BY {', '.join(KEYS[table])}"
                    )
            conn.execute(
                f"CREATE TABLE {_STATE_TABLE} (snapshot BIGINT, format VARCHAR, tables VARCHAR)"
            )
            conn.execute(
                f"INSERT INTO {_STATE_TABLE} VALUES (?, ?, ?)",
                [target, _FORMAT, json.dumps(identity)],
            )
            rows = _count(conn, f"main.{TABLE}")
            conn.execute(f"DETACH {LAKE_ALIAS}")
            conn.execute("CHECKPOINT")
        finally:
            self._building = None
            conn.close()
        with self._lock.exclusive():
            self._close_conn()
            path.replace(self._folder / COPY_FILE)
            copy = self._connect(self._folder / COPY_FILE)
            self._install(copy, target)
        self._attach_lake(copy)  # now, not on the next commit's time
        log.info(
            "lake copy built at snapshot %s in %.1f s (%d daily bars)",
            target,
            time.perf_counter() - started,
            rows,
        )

    def _catch_up(self, target: int) -> None:
        """Apply the commits after the copy's snapshot up to ``target``, in one transaction."""
        conn = self._conn
        assert conn is not None and self._snapshot is not None
        after, started = self._snapshot, time.perf_counter()
        self._attach_lake(conn)
        changed = self._changed(conn, after, target)
        cursor = conn.cursor()
        try:
            cursor.begin()
            try:
                for table, deleted in changed.items():
                    _apply(cursor, table, after, target, deleted)
                cursor.execute(f"UPDATE {_STATE_TABLE} SET snapshot = ?", [target])
                with self._lock.exclusive():
                    cursor.commit()
                    self._snapshot = target
            except BaseException:
                with contextlib.suppress(duckdb.Error):
                    cursor.rollback()
                raise
        except duckdb.InvalidInputException as exc:
            if "snapshot" not in str(exc).lower():
                raise
            raise _Rebuild(f"the change feed from snapshot {after + 1} is gone: {exc}") from exc
        finally:
            cursor.close()
        self._checkpoint(conn)
        log.debug(
            "lake copy %s -> %s in %.0f ms (%s)",
            after,
            target,
            (time.perf_counter() - started) * 1000,
            ", ".join(changed) or "nothing",
        )

    def _checkpoint(self, conn: duckdb.DuckDBPyConnection) -> None:
        """Fold the write-ahead log into the file once it is big, here rather than in a commit
        (where DuckDB would do it, with questions waiting on the lock)."""
        wal = self._folder / (COPY_FILE + ".wal")
        if wal.exists() and wal.stat().st_size > CHECKPOINT_BYTES:
            with contextlib.suppress(duckdb.Error):  # busy: the next catch-up tries again
                conn.execute("CHECKPOINT")

    def _changed(self, conn: duckdb.DuckDBPyConnection, after: int, upto: int) -> dict[str, bool]:
        """The copied tables the commits in ``(after, upto]`` changed, each with whether rows
        were deleted (or replaced) in it. Every table, as if deleted from, when the catalog's
        tables cannot be read or a commit is of an unknown kind."""
        every = dict.fromkeys(self._tables.values(), True)
        try:
            rows = conn.execute(_SNAPSHOTS_SQL, {"after": after, "upto": upto}).fetchall()
        except (duckdb.CatalogException, duckdb.BinderException) as exc:
            log.debug("DuckLake's catalog tables cannot be read (%s); reading every table", exc)
            return every
        if [int(row[0]) for row in rows] != list(range(after + 1, upto + 1)):
            raise _Rebuild(f"snapshots after {after} are no longer all kept by the lake")
        changed: dict[str, bool] = {}
        for snapshot, made in rows:
            for kind, value in _CHANGE.findall(made or ""):
                if kind in _INSERTS or kind in _DELETES:
                    table = self._tables.get(int(value)) if value.isdigit() else None
                    if table is not None:
                        changed[table] = changed.get(table, False) or kind in _DELETES
                elif kind in _RESHAPE:
                    raise _Rebuild(f"snapshot {snapshot} changed a table ({kind} {value})")
                elif kind not in _QUIET:
                    return every
            if made is None:
                return every
        return changed

    def _identity(self, conn: duckdb.DuckDBPyConnection) -> dict[str, str | None]:
        """The copied tables' ids in the lake (remembered), and their UUIDs: a lake made again,
        or a table made again, has new ones. A lake from before the intraday bars and the
        change log lacks those tables (None) until a writer that knows them makes them."""
        rows = conn.execute(_TABLE_IDS_SQL).fetchall()
        found = {str(name): (int(table_id), str(uuid)) for table_id, name, uuid in rows}
        self._tables = {found[table][0]: table for table in KEYS if table in found}
        return {table: found[table][1] if table in found else None for table in KEYS}

    def _attach_lake(self, conn: duckdb.DuckDBPyConnection) -> None:
        if conn is self._conn and self._lake_attached:
            return
        conn.execute(f"DETACH DATABASE IF EXISTS {LAKE_ALIAS}")  # a detach that failed before
        attach_read_only(conn, self._settings)
        if conn is self._conn:
            self._lake_attached = True

    def _detach_lake(self) -> None:
        """Let the lake's attachment go (its catalog connections may be dead); the next
        catch-up attaches it again."""
        conn = self._conn
        if conn is None or not self._lake_attached:
            return
        self._lake_attached = False
        with contextlib.suppress(duckdb.Error):
            conn.execute(f"DETACH {LAKE_ALIAS}")

    def _install(self, conn: duckdb.DuckDBPyConnection, snapshot: int) -> None:
        """Make ``conn`` the copy that questions read (call with the lock held, or before
        anyone reads)."""
        self._conn = conn
        self._lake_attached = any(
            row[0] == LAKE_ALIAS
            for row in conn.execute("SELECT database_name FROM duckdb_databases()").fetchall()
        )
        self._snapshot = snapshot
        self._generation += 1

    def _close_conn(self) -> None:
        conn, self._conn, self._lake_attached = self._conn, None, False
        if conn is not None:
            with contextlib.suppress(duckdb.Error):
                conn.close()

    def _connect(self, path: Path) -> duckdb.DuckDBPyConnection:
        try:
            self._folder.mkdir(parents=True, exist_ok=True)
            return duckdb.connect(
                str(path),
                config={
                    "memory_limit": self._memory_limit,
                    "temp_directory": str(self._folder / "tmp"),
                    "checkpoint_threshold": "64GB",
                },
            )
        except (OSError, duckdb.Error) as exc:
            raise _LocalFailure(f"the lake copy cannot open {path}: {exc}") from exc


def _apply(
    cursor: duckdb.DuckDBPyConnection, table: str, after: int, upto: int, deleted: bool
) -> None:
    """Bring ``table`` from snapshot ``after`` to ``upto``: every row inserted or updated in
    between replaces the copy's row of its key (the newest version of each key wins). Where the
    commits also deleted rows, the counts tell whether any key went for good; only then are the
    deletions read (reading them means reading the old rows' files), and if the counts still
    disagree the table is copied again whole."""
    keys = KEYS[table]
    match = " AND ".join(f"t.{key} = f.{key}" for key in keys)
    partition = ", ".join(keys)
    cursor.execute(
        f"CREATE OR REPLACE TEMP TABLE copy_fresh AS "
        f"SELECT *, snapshot_id AS copy_snapshot "
        f"FROM ducklake_table_insertions('{LAKE_ALIAS}', 'main', '{table}', {after + 1}, {upto}) "
        f"QUALIFY row_number() OVER (PARTITION BY {partition} ORDER BY snapshot_id DESC) = 1"
    )
    cursor.execute(f"DELETE FROM main.{table} AS t USING copy_fresh AS f WHERE {match}")
    cursor.execute(
        f"INSERT INTO main.{table} BY NAME SELECT * EXCLUDE (copy_snapshot) FROM copy_fresh"
    )
    if deleted and not _same_count(cursor, table, upto):
        cursor.execute(
            f"DELETE FROM main.{table} AS t USING ("
            f"  SELECT d.* FROM ("
            f"    SELECT {partition}, max(snapshot_id) AS gone FROM ducklake_table_deletions("
            f"      '{LAKE_ALIAS}', 'main', '{table}', {after + 1}, {upto}) GROUP BY ALL"
            f"  ) AS d LEFT JOIN copy_fresh AS n USING ({partition})"
            f"  WHERE n.copy_snapshot IS NULL OR n.copy_snapshot < d.gone"
            f") AS f WHERE {match}"
        )
        if not _same_count(cursor, table, upto):
            log.warning("the lake copy's %s disagreed with the lake at snapshot %s after its "
                        "changes (rows sharing a key?); copying it whole", table, upto)  # fmt: skip
            cursor.execute(f"DELETE FROM main.{table}")
            cursor.execute(
                f"INSERT INTO main.{table} BY NAME "
                f"SELECT * FROM {LAKE_ALIAS}.main.{table} AT (VERSION => {upto})"
            )
    cursor.execute("DROP TABLE copy_fresh")


def _same_count(cursor: duckdb.DuckDBPyConnection, table: str, snapshot: int) -> bool:
    lake = _count(cursor, f"{LAKE_ALIAS}.main.{table} AT (VERSION => {snapshot})")
    return lake == _count(cursor, f"main.{table}")


def _count(cursor: duckdb.DuckDBPyConnection, source: str) -> int:
    row = cursor.execute(f"SELECT count(*) FROM {source}").fetchone()
    return 0 if row is None else int(row[0])


def _remove(path: Path) -> None:
    """A DuckDB file and its write-ahead log."""
    path.unlink(missing_ok=True)
    path.with_name(path.name + ".wal").unlink(missing_ok=True)
