"""The data version: a tiny file the loader rewrites after each commit.

The API compares the file's ``stat()`` (a few microseconds) instead of asking DuckDB, so it can
check on every request or every few hundred milliseconds and drop its cache as soon as a load
commits. The file is replaced atomically (``market_core.atomic``), so a reader sees either the
old or the new version, never a torn one.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

from market_core.atomic import write_text_atomic


def publish(path: Path) -> str:
    """Record that a load has committed; return the new version string."""
    version = f"{time.time_ns():x}-{uuid.uuid4().hex[:8]}"
    write_text_atomic(path, version + "\n")
    return version


def read(path: Path) -> str | None:
    """The current version, or ``None`` before the first load."""
    try:
        return path.read_text(encoding="ascii").strip() or None
    except FileNotFoundError:
        return None


def stamp(path: Path) -> tuple[int, int] | None:
    """A cheap fingerprint of the version file: changes whenever ``publish`` runs."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns)
