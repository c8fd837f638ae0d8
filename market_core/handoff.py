"""How loaders and the API share one DuckDB file: a kernel ``flock`` that writers hold and
readers only test, so a ``kill -9`` never leaves a stale lock (docs/design/core-internals.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from market_core import data_version
from market_core.home import DataHome

WRITE_LOCK_WAIT_SECONDS = 600.0
"""How long a loader waits for another to finish: a batch holds the lock for seconds, so ten
minutes means the holder is stuck, not busy."""

_FIRST_RETRY_SECONDS = 0.005
_MAX_RETRY_SECONDS = 0.1


class WriteLockTimeout(Exception):
    """Another loader held the write lock for longer than a loader waits."""


def lock_path(home: DataHome) -> Path:
    return home.writers_dir / "lock"


@contextlib.contextmanager
def write_lock(home: DataHome, wait_seconds: float = WRITE_LOCK_WAIT_SECONDS) -> Iterator[None]:
    """Hold the exclusive write lock; wait (polling, bounded) while another loader holds it.

    Polling rather than a blocking ``flock``: a thread blocked in the kernel cannot be
    interrupted, so a run being stopped would hang until killed."""
    path = lock_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _acquire(fd, path, wait_seconds)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _acquire(fd: int, path: Path, wait_seconds: float) -> None:
    deadline = time.monotonic() + wait_seconds
    delay = _FIRST_RETRY_SECONDS
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise WriteLockTimeout(
                    f"another loader has held {path} for over {wait_seconds:.0f} s; "
                    "look for a hung ingest or Dagster run on this data home and stop it"
                ) from None
            time.sleep(delay)
            delay = min(2 * delay, _MAX_RETRY_SECONDS)


def write_locked(home: DataHome) -> bool:
    """True while a loader holds the write lock. Changes nothing on disk."""
    try:
        fd = os.open(lock_path(home), os.O_RDONLY)
    except FileNotFoundError:  # no loader ever came through this data home
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also releases the test lock if it was granted
    return False


class WriteHandoff:
    """A loader's side of the hand-off while it holds the lock (``exclusive_write``)."""

    def __init__(self, home: DataHome, adopted: data_version.Record) -> None:
        self._home = home
        self._adopted = adopted

    def finish(self, changed: bool) -> str | None:
        """After the commit and the close: record the file as left; the data version.

        Skipped if the load failed: a commit that happened anyway then shows as a file the
        record does not describe, which readers treat as a new version."""
        left = data_version.fingerprint(self._home.duckdb_path)
        return data_version.settle(self._home.version_path, self._adopted, left, changed)


@contextlib.contextmanager
def exclusive_write(
    home: DataHome, wait_seconds: float = WRITE_LOCK_WAIT_SECONDS
) -> Iterator[WriteHandoff]:
    """Hold the write lock for one read-write session; readers let go while it is held."""
    home.root.mkdir(parents=True, exist_ok=True)
    with write_lock(home, wait_seconds):
        found = data_version.fingerprint(home.duckdb_path)
        yield WriteHandoff(home, data_version.adopt(home.version_path, found))


class VersionWatch:
    """The data version a reader follows, cheap enough to ask every few milliseconds.

    A call ``stat``s the record, the DuckDB file and its WAL; only when one of them changed
    does it read the record and derive the version (``data_version.current``). While a loader
    holds the lock the file is in flux, so the last version stands: readers keep their cache
    during a load and see the new version once the loader is done, since it records before it
    releases. Thread-safe."""

    def __init__(self, home: DataHome) -> None:
        self._home = home
        self._lock = threading.Lock()
        self._seen: tuple[data_version.Fingerprint, data_version.Stat | None] | None = None
        self._version: str | None = None
        self.current()

    def current(self) -> str | None:
        home = self._home
        with self._lock:
            if write_locked(home):
                if self._seen is None:  # started during a load: the published version for now
                    self._version = data_version.read(home.version_path)
                return self._version
            seen = (
                data_version.fingerprint(home.duckdb_path),
                data_version.stamp(home.version_path),
            )
            if seen == self._seen:
                return self._version
            record = data_version.read_record(home.version_path)
            if write_locked(home):  # a loader came in meanwhile: look again once it is done
                return self._version
            self._version = data_version.current(record, seen[0])
            self._seen = seen
            return self._version
