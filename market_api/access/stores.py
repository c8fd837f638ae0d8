"""Where API keys live: a SQLite file in the data home (file mode), or a table in the lake
catalog's PostgreSQL (multi-machine mode), so that every replica knows every key.

Both run the same SQL; only the connection and the placeholder differ. Times are stored as
ISO 8601 text in UTC.
"""

from __future__ import annotations

import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from market_api.access.keys import (
    TABLE,
    ActiveKey,
    KeyNameTaken,
    KeyRecord,
    KeyStoreUnavailable,
    check_name,
    digest,
    new_key,
)
from market_core.home import DataHome
from market_core.lake import LakeSettings

FILE_NAME = "api_keys.sqlite3"
CONNECT_TIMEOUT_SECONDS = 5

_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} (lookup TEXT PRIMARY KEY, name TEXT NOT NULL, "
    "key_sha256 TEXT NOT NULL, created_at TEXT NOT NULL, last_used_at TEXT, revoked_at TEXT)",
    f"CREATE UNIQUE INDEX IF NOT EXISTS {TABLE}_active_name ON {TABLE} (name) "
    "WHERE revoked_at IS NULL",
)


def now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class KeyStore(ABC):
    """The keys' table; ``?`` in the SQL below becomes the driver's placeholder."""

    placeholder = "?"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ready = False

    @abstractmethod
    def _execute(self, sql: str, rows: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
        """Run ``sql`` once per row of parameters (once with none if ``rows`` is empty) in one
        transaction; the rows the last run returned."""

    @abstractmethod
    def close(self) -> None: ...

    def _run(self, sql: str, *rows: Sequence[Any]) -> list[tuple[Any, ...]]:
        with self._lock:
            if not self._ready:
                for statement in _SCHEMA:
                    self._execute(statement, ())
                self._ready = True
            return self._execute(sql.replace("?", self.placeholder), rows)

    def create(self, name: str) -> str:
        """A new key named ``name``, returned this once."""
        check_name(name)
        if self._run(f"SELECT 1 FROM {TABLE} WHERE name = ? AND revoked_at IS NULL", (name,)):
            raise KeyNameTaken(
                f"an active key is already named {name!r}; revoke it first "
                f"(make api-key-revoke NAME={name}) or choose another name"
            )
        key, lookup = new_key()
        self._run(
            f"INSERT INTO {TABLE} (lookup, name, key_sha256, created_at) VALUES (?, ?, ?, ?)",
            (lookup, name, digest(key).hex(), now_text()),
        )
        return key

    def records(self) -> list[KeyRecord]:
        """The active keys, oldest first."""
        rows = self._run(
            f"SELECT name, lookup, created_at, last_used_at FROM {TABLE} "
            "WHERE revoked_at IS NULL ORDER BY created_at, name"
        )
        return [
            KeyRecord(name, lookup, _time(created), None if used is None else _time(used))
            for name, lookup, created, used in rows
        ]

    def revoke(self, name: str) -> int:
        """How many active keys named ``name`` were revoked (0 or 1)."""
        found = self._run(
            f"UPDATE {TABLE} SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL "
            "RETURNING lookup",
            (now_text(), name),
        )
        return len(found)

    def active(self) -> dict[str, ActiveKey]:
        rows = self._run(f"SELECT name, lookup, key_sha256 FROM {TABLE} WHERE revoked_at IS NULL")
        return {lookup: ActiveKey(name, lookup, bytes.fromhex(sha)) for name, lookup, sha in rows}

    def touch(self, used: Mapping[str, datetime]) -> None:
        """Record last use, one statement per key, in one transaction."""
        if used:
            self._run(
                f"UPDATE {TABLE} SET last_used_at = ? WHERE lookup = ?",
                *[
                    (moment.isoformat(timespec="seconds"), lookup)
                    for lookup, moment in used.items()
                ],
            )


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


class FileKeyStore(KeyStore):
    """``<data home>/state/api_keys.sqlite3``, apart from the DuckDB file that loaders write."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                self.path, timeout=10, check_same_thread=False, isolation_level=None
            )
            self._conn.execute("PRAGMA journal_mode=WAL")
        return self._conn

    def _execute(self, sql: str, rows: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
        try:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE" if sql.lstrip().upper()[:6] != "SELECT" else "BEGIN")
            try:
                found: list[tuple[Any, ...]] = []
                for params in rows or [()]:
                    found = conn.execute(sql, params).fetchall()
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise KeyStoreUnavailable(f"the API key file {self.path}: {exc}") from None
        return found

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class PostgresKeyStore(KeyStore):
    """A table in the lake catalog's database: the PostgreSQL every replica already reaches."""

    placeholder = "%s"

    def __init__(self, lake: LakeSettings) -> None:
        super().__init__()
        self._lake = lake
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None

    def _execute(self, sql: str, rows: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(
                    self._lake.conninfo, connect_timeout=CONNECT_TIMEOUT_SECONDS
                )
            found: list[tuple[Any, ...]] = []
            with self._conn.transaction(), self._conn.cursor() as cur:
                for params in rows or [()]:
                    cur.execute(sql.encode(), params)
                    found = cur.fetchall() if cur.description else []
            return found
        except psycopg.Error as exc:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            # psycopg's text may quote the URL, password and all
            raise KeyStoreUnavailable(
                f"the API key table in {self._lake.redacted_url}: "
                f"{self._lake.redact(type(exc).__name__ + ': ' + str(exc))}"
            ) from None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def open_key_store(home: DataHome) -> KeyStore:
    """PostgreSQL when ``MARKET_POSTGRES_URL`` is set (as the readers decide), else the file."""
    lake = LakeSettings.from_env()
    if lake is not None:
        return PostgresKeyStore(lake)
    return FileKeyStore(home.state_dir / FILE_NAME)
