"""The data version: which committed state of the DuckDB file readers are looking at, cheap
enough to check every few milliseconds and right even after a loader's ``kill -9``
(docs/design/core-internals.md).
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from market_core.atomic import write_text_atomic

Stat = tuple[int, int]
"""Size and mtime in nanoseconds."""


@dataclass(frozen=True)
class Fingerprint:
    """How the DuckDB file and its WAL look on disk; ``None`` for a file that does not exist."""

    database: Stat | None
    wal: Stat | None

    def encode(self) -> str:
        return " ".join(_encode_stat(s) for s in (self.database, self.wal))

    @classmethod
    def decode(cls, text: str) -> Fingerprint | None:
        parts = text.split()
        if len(parts) != 2:
            return None
        try:
            return cls(_decode_stat(parts[0]), _decode_stat(parts[1]))
        except ValueError:
            return None

    def digest(self) -> str:
        return hashlib.blake2b(self.encode().encode(), digest_size=4).hexdigest()


ABSENT = Fingerprint(None, None)


def _encode_stat(stat: Stat | None) -> str:
    return "-" if stat is None else f"{stat[0]}:{stat[1]}"


def _decode_stat(text: str) -> Stat | None:
    if text == "-":
        return None
    size, mtime = text.split(":")
    return int(size), int(mtime)


def _stat(path: Path) -> Stat | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns


def wal_path(database: Path) -> Path:
    """Where DuckDB keeps the write-ahead log of ``database``."""
    return database.with_name(database.name + ".wal")


def fingerprint(database: Path) -> Fingerprint:
    return Fingerprint(_stat(database), _stat(wal_path(database)))


@dataclass(frozen=True)
class Record:
    version: str | None
    """``None`` until the first load that changed rows."""
    fingerprint: Fingerprint | None
    """``None`` in a record written by an earlier release (the version alone)."""


def new_version() -> str:
    return f"{time.time_ns():x}-{uuid.uuid4().hex[:8]}"


def read_record(path: Path) -> Record | None:
    """The record, or ``None`` before any loader came through the hand-off."""
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        return None
    version, _, rest = text.partition("\n")
    return Record(version.strip() or None, Fingerprint.decode(rest))


def read(path: Path) -> str | None:
    """The version the last loader published, or ``None`` before the first load."""
    record = read_record(path)
    return None if record is None else record.version


def write(path: Path, record: Record) -> None:
    fp = record.fingerprint.encode() if record.fingerprint is not None else ""
    write_text_atomic(path, f"{record.version or ''}\n{fp}\n")


def publish(path: Path, left: Fingerprint) -> str:
    """Record a load that changed rows, leaving the file as ``left``; the new version."""
    version = new_version()
    write(path, Record(version, left))
    return version


def stamp(path: Path) -> Stat | None:
    """A cheap fingerprint of the record: changes whenever a loader rewrites it."""
    return _stat(path)


def current(record: Record | None, now: Fingerprint) -> str | None:
    """The version readers serve: the published one while the file is as its loader left it,
    else one derived from the file (a loader committed and died before recording)."""
    if record is None or record.fingerprint is None or record.fingerprint == now:
        return None if record is None else record.version
    return f"{record.version or '0'}+{now.digest()}"


def adopt(path: Path, found: Fingerprint) -> Record:
    """A loader's first step under the lock: make the record describe the file as found.

    A mismatch means a previous loader committed and died before recording (or the record
    predates fingerprints): its change gets a real version now, whatever this load does. An
    empty record is written before the very first load, so that a first load that dies after
    its commit is seen too."""
    record = read_record(path)
    if record is not None and record.fingerprint == found:
        return record
    fresh = Record(None if record is None and found == ABSENT else new_version(), found)
    write(path, fresh)
    return fresh


def settle(path: Path, adopted: Record, left: Fingerprint, changed: bool) -> str | None:
    """A loader's last step under the lock, after its commit and close: a new version if rows
    changed, else the adopted one with the file's new fingerprint (if it moved at all)."""
    if changed:
        return publish(path, left)
    if left != adopted.fingerprint:
        write(path, Record(adopted.version, left))
    return adopted.version
