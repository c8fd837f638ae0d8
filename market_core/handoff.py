"""How the loader and the API share one DuckDB file.

DuckDB lets one process open a file read-write, or many open it read-only, never both. The API
wants a long-lived read-only connection (a fresh connect costs ~50 ms, a query on an open one
~3 ms); the loader needs the file to itself for a few hundred milliseconds per batch. The
protocol:

* A writer first drops a marker file in ``DataHome.writers_dir`` (``announce_write``), then
  connects read-write, retrying lock errors with a short backoff until readers have let go.
* A reader checks ``writers_waiting`` before it opens the file and, from a background poll and
  before every query, closes its connection as soon as a marker appears. While a marker exists it
  does not reopen; it serves from its cache and retries misses for a bounded time.
* Markers carry the writer's pid and its start time, so a marker left by a killed writer is
  ignored and removed, even once the pid has been given to another process. Whoever removes it
  publishes a new data version: the writer may have committed and died before it published its
  own, and readers must not go on serving what they cached before.

"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from market_core import data_version
from market_core.home import DataHome
from market_core.processes import owner_alive, owner_tag


def _marker_owner_alive(name: str) -> bool:
    """A marker is ``{pid}-{start}-{uuid}``; markers of earlier versions are ``{pid}-{uuid}``."""
    parts = name.split("-")
    if not parts[0].isdigit():
        return False
    start = parts[1] if len(parts) >= 3 else None
    return owner_alive(int(parts[0]), start)


@contextlib.contextmanager
def announce_write(writers_dir: Path) -> Iterator[None]:
    """Hold a writer marker for the duration of a read-write connection."""
    writers_dir.mkdir(parents=True, exist_ok=True)
    marker = writers_dir / f"{owner_tag()}-{uuid.uuid4().hex}"
    marker.touch()
    try:
        yield
    finally:
        marker.unlink(missing_ok=True)


def writers_waiting(writers_dir: Path) -> bool:
    """True while a live process wants (or holds) the file read-write."""
    try:
        entries = list(os.scandir(writers_dir))
    except FileNotFoundError:
        return False
    waiting = reaped = False
    for entry in entries:
        if _marker_owner_alive(entry.name):
            waiting = True
            continue
        with contextlib.suppress(OSError):  # another reader was first, or a read-only home
            os.unlink(entry.path)
            reaped = True
    if reaped:
        with contextlib.suppress(OSError):
            data_version.publish(DataHome(writers_dir.parent).version_path)
    return waiting
