"""Dagster's SQLite event log, with the writes of a run kept cheap.

The stock storage opens a new engine and connection for every write, commits with an fsync, and
closes: the close of a database's last connection checkpoints the write-ahead log into the file
(another fsync) and deletes it. Two databases a materialization (the run's and the index), 5-20 ms
an event. This one writes through an engine held per database (the connection stays open, the
compiled statements are cached) with ``synchronous=NORMAL`` (WAL mode: a commit appends to the
log without an fsync; the database can lose the last commits on a power cut, never its
consistency), and checkpoints the log itself: at once after any event but an asset event, at most
every ``CHECKPOINT_SECONDS`` during a burst of them. The webserver follows a run's log by
watching its ``.db`` file, which a checkpoint is what changes. Reads, and every other process
using the stock class, go the stock way; the files and schema are Dagster's own.

A materialization, one a symbol and stage, is the event a run writes most, and the stock path
spends most of its time in Python around the SQL: it serializes the event twice (the row, then
the asset's latest record, which holds the same JSON), builds three new statements for each
event (SQLAlchemy computes each one's cache key anew), and inserts the asset's key before it
updates it (an integrity error each time but the first). Here the same rows go through statements
built once, the event serialized once, the key updated first: about half the CPU an event.
docs/design/runs-and-assets.md.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from dagster._core.errors import DagsterInvariantViolationError
from dagster._core.event_api import EventLogRecord
from dagster._core.events import BATCH_WRITABLE_EVENTS, DagsterEventType
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log import SqliteEventLogStorage
from dagster._core.storage.event_log.schema import AssetKeyTable, SqlEventLogStorageTable
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._serdes import ConfigurableClassData, serialize_value
from dagster._time import datetime_from_timestamp
from sqlalchemy import bindparam, create_engine, event, text
from sqlalchemy.engine import Connection, Engine

CHECKPOINT_SECONDS = 0.5
"""How long a database's newest asset events may wait in its log before the ``.db`` file (and
so the UI's live view of the run) sees them, while more keep coming."""
HELD_DATABASES = 4
"""Engines kept open: the index and the last few runs written (one at a time, in practice)."""
INDEX = "index"
INSERT_EVENT = SqlEventLogStorageTable.insert()
"""The event row's insert, one statement for every row (its values as parameters): SQLAlchemy
compiles it and computes its cache key once, not for each event as for ``insert().values(...)``."""
INSERT_ASSET = AssetKeyTable.insert()
UPDATE_ASSET = AssetKeyTable.update().where(AssetKeyTable.c.asset_key == bindparam("key_"))
LATEST_RECORD = '{{"__class__": "EventLogRecord", "event_log_entry": {event}, "storage_id": {id}}}'
"""``serialize_value(EventLogRecord(id, event))`` around the event's own JSON; checked against
Dagster's serialization on each storage's first materialization, which is used if they differ."""


def sync_normal_if_wal(dbapi_connection: Any, _record: Any) -> None:
    """Each held connection commits without an fsync, if its database is in WAL mode (Dagster
    creates every event database so); a rollback-journal database keeps its full syncs."""
    cursor = dbapi_connection.cursor()
    try:
        (mode,) = cursor.execute("PRAGMA journal_mode").fetchone()
        if str(mode).lower() == "wal":
            cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


class HeldSqliteEventLogStorage(SqliteEventLogStorage):
    """``SqliteEventLogStorage`` whose event writes reuse one open connection per database."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        self._held: OrderedDict[str, Engine] = OrderedDict()
        self._checkpointed: dict[str, float] = {}
        self._writing = threading.local()
        self._index_cols = False
        self._composes: bool | None = None
        self._pid = os.getpid()
        super().__init__(base_dir, inst_data)

    @classmethod
    def from_config_value(  # type: ignore[override]
        cls, inst_data: ConfigurableClassData | None, config_value: dict[str, Any]
    ) -> HeldSqliteEventLogStorage:
        return cls(inst_data=inst_data, **config_value)

    def _has_asset_key_index_cols_on_connection(self, conn: Connection) -> bool:
        """Asked by every asset event (a schema query); columns, once there, stay."""
        if not self._index_cols:
            self._index_cols = super()._has_asset_key_index_cols_on_connection(conn)
        return self._index_cols

    def store_event(self, event: EventLogEntry) -> None:
        self._store([event])

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        self._store(events)

    def _store(self, events: Sequence[EventLogEntry]) -> None:
        self._writing.active = True
        try:
            for one in events:
                if one.dagster_event_type == DagsterEventType.ASSET_MATERIALIZATION:
                    self._store_materialization(one)
                else:
                    super().store_event(one)
        finally:
            self._writing.active = False
        now = time.monotonic()
        urgent = any(e.dagster_event_type not in BATCH_WRITABLE_EVENTS for e in events)
        for shard in {e.run_id for e in events} | {INDEX}:
            if urgent or now - self._checkpointed.get(shard, 0.0) >= CHECKPOINT_SECONDS:
                self._checkpoint(shard, now)

    def _store_materialization(self, entry: EventLogEntry) -> None:
        """The rows ``SqliteEventLogStorage.store_event`` writes for a materialization: the event
        in the run's database and in the index, its indexed tags, and the asset's latest record."""
        row = self._event_to_row(entry)
        key = row["asset_key"]
        if key is None:  # an asset event without an asset: the stock path knows what to do
            super().store_event(entry)
            return
        with self.run_connection(entry.run_id) as conn:
            conn.execute(INSERT_EVENT, row)
        with self.index_transaction() as conn:
            inserted = conn.execute(INSERT_EVENT, row).inserted_primary_key
            event_id = inserted[0] if inserted else None
            if event_id is None:
                raise DagsterInvariantViolationError("no id for the asset event just stored")
            self._store_asset_event_tags(conn, [entry], [event_id])
            latest: dict[str, Any] = {
                "last_materialization": self._latest_record(entry, row["event"], event_id),
                "last_run_id": entry.run_id,
            }
            if self._has_asset_key_index_cols_on_connection(conn):
                latest["last_materialization_timestamp"] = datetime_from_timestamp(entry.timestamp)
            # No other writer gets between the two: the transaction holds the index's write lock
            # since its first insert.
            if not conn.execute(UPDATE_ASSET, {**latest, "key_": key}).rowcount:
                conn.execute(INSERT_ASSET, {"asset_key": key, **latest})

    def _latest_record(self, entry: EventLogEntry, event_json: str, event_id: int) -> str:
        """The asset's latest record as Dagster serializes it, around the JSON already made."""
        composed = LATEST_RECORD.format(event=event_json, id=event_id)
        if self._composes:
            return composed
        dagster = serialize_value(EventLogRecord(storage_id=event_id, event_log_entry=entry))
        if self._composes is None:
            self._composes = composed == dagster
        return dagster

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        if not getattr(self._writing, "active", False):
            with super()._connect(shard) as conn:
                yield conn
            return
        with self._db_lock:
            engine = self._engine(shard)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
                engine.dispose()  # a new database became WAL just now: reconnect to say NORMAL
            with engine.connect() as conn, conn.begin():
                yield conn

    def _engine(self, shard: str) -> Engine:
        """The shard's held engine (under ``_db_lock``), the least recent one closed past
        ``HELD_DATABASES``; none inherited across a fork."""
        if os.getpid() != self._pid:
            for engine in self._held.values():
                engine.dispose(close=False)
            self._held.clear()
            self._pid = os.getpid()
        held = self._held.get(shard)
        if held is None:
            engine = create_engine(
                self.conn_string_for_shard(shard),
                pool_size=1,
                max_overflow=2,
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS},
            )
            event.listen(engine, "connect", sync_normal_if_wal)
            self._held[shard] = engine
            while len(self._held) > HELD_DATABASES:
                _, oldest = self._held.popitem(last=False)
                oldest.dispose()
            return engine
        self._held.move_to_end(shard)
        return held

    def _checkpoint(self, shard: str, now: float) -> None:
        """Copy the shard's log into its ``.db`` file now, as far as readers allow (passive)."""
        self._checkpointed[shard] = now
        with self._db_lock:
            engine = self._held.get(shard)
            if engine is None:
                return
            with engine.connect() as conn:
                conn.execute(text("PRAGMA wal_checkpoint(PASSIVE)"))

    def delete_events(self, run_id: str) -> None:
        self._release(run_id)
        super().delete_events(run_id)

    def wipe(self) -> None:
        self._release()
        super().wipe()

    def dispose(self) -> None:
        self._release()
        super().dispose()

    def _release(self, shard: str | None = None) -> None:
        """Close the held engines (or the one of ``shard``); closing the last connection to a
        database checkpoints its log and removes it."""
        with self._db_lock:
            shards = list(self._held) if shard is None else [shard]
            for name in shards:
                engine = self._held.pop(name, None)
                if engine is not None:
                    engine.dispose()
