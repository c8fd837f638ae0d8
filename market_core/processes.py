"""Telling a live process from a dead one whose pid may have been reused.

Temporary files are named after their writer (``owner_tag``), so that the ones a killed writer
left can be told from those of a running one (``owner_alive``) and removed.
"""

from __future__ import annotations

import os
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs (it may be another one after a reuse)."""
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
    then known by its pid alone. A pid is reused, its start time never is."""
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

    Only a start time that differs proves a reuse; one that cannot be read counts as alive."""
    if not pid_alive(pid):
        return False
    if start is None or start == "x":
        return True
    now = process_start(pid)
    return now is None or now == start
