"""The one way any file of a data home is replaced: temporary file, fsync, rename.

A reader (or a process started after a crash) sees the old file or the new one, never a torn
one. The temporary file sits in the same folder (a rename is atomic only within a file system)
and is named after its writer (``processes.owner_tag``); the first write of a process into a
folder removes those whose writer is gone, so a ``kill -9`` leaves nothing behind for longer
than until the next run.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path

from market_core.processes import owner_alive, owner_tag

_TMP_NAME = re.compile(r"\..+\.(?P<pid>\d+)-(?P<start>\d+|x)-[0-9a-f]{12}\.tmp")
_swept: set[Path] = set()


def remove_orphaned_tmp(folder: Path) -> list[Path]:
    """Remove the temporary files in ``folder`` whose writer is no longer running."""
    removed = []
    with contextlib.suppress(FileNotFoundError), os.scandir(folder) as entries:
        for entry in entries:
            match = _TMP_NAME.fullmatch(entry.name)
            if match is None or owner_alive(int(match["pid"]), match["start"]):
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Replace ``path`` with what ``write`` puts into the temporary path it is given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.parent not in _swept:  # once per process and folder: a scan is ~1 ms per 1000 files
        remove_orphaned_tmp(path.parent)
        _swept.add(path.parent)
    tmp = path.with_name(f".{path.name}.{owner_tag()}-{uuid.uuid4().hex[:12]}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    def write(tmp: Path) -> None:
        tmp.write_text(text, encoding="utf-8")

    write_atomic(path, write)
