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

The same owner tag (``owner_tag``, ``owner_alive``) names the pipeline's temporary Parquet files,
so that those of a killed writer can be told from those of a running one and removed.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from market_core import data_version
from market_core.home import DataHome


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_start(pid: int) -> str | None:
    """When ``pid`` started (field 22 of ``/proc/<pid>/stat``, clock ticks after boot).

    ``None`` where there is no ``/proc`` (macOS) or the process is not visible; the owner is
    then known by its pid alone, as before. A pid is reused, its start time never is."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    fields = stat[stat.rfind(b")") + 2 :].split()
    return fields[19].decode() if len(fields) > 19 else None


def owner_tag() -> str:
    """``{pid}-{start}`` of this process (``x`` for an unknown start); no dots, one dash."""
    pid = os.getpid()
    return f"{pid}-{process_start(pid) or 'x'}"


def owner_alive(pid: int, start: str | None) -> bool:
    """Whether the process that wrote an owner tag still runs: same pid, same start time.

    Only a start time that differs proves a reuse; one that cannot be read counts as alive
    (at worst a reader waits its bounded time, as with any live writer)."""
    if not _pid_alive(pid):
        return False
    if start is None or start == "x":
        return True
    now = process_start(pid)
    return now is None or now == start


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
