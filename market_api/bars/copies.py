"""What the per-process copies of a data version (``by_date``, ``by_symbol``) share: one build at a
time, in a thread, never retried at a version it failed at, and files named by the pid that
made them, so a later process can remove what a killed one left."""

from __future__ import annotations

import logging
import os
import secrets
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from market_core.processes import pid_alive

log = logging.getLogger(__name__)

T = TypeVar("T")

VersionKey = tuple[str | None]
"""A data version as a copy is keyed by (None: the store's only one)."""


class TooSmall(Exception):
    """The version holds fewer bars than the copy's minimum: its store answers as quickly."""


class Builds:
    """Which version is being built, which failed, and whether the API is stopping."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self._building: VersionKey | None = None
        self._failed: set[VersionKey] = set()

    def start(
        self, key: VersionKey, held: VersionKey | None, build: Callable[[], None], name: str
    ) -> None:
        """Run ``build`` in a thread named ``name``, unless ``key`` is ``held``, a build is under
        way, ``key`` failed before, or the API is stopping."""
        with self.lock:
            if (
                self.stop.is_set()
                or held == key
                or self._building is not None
                or key in self._failed
            ):
                return
            self._building = key
        threading.Thread(target=build, name=name, daemon=True).start()

    def attempt(
        self,
        key: VersionKey,
        what: str,
        make: Callable[[], T],
        leftovers: Sequence[Path],
        unlink: Callable[[Path], None],
    ) -> T | None:
        """``make()``, or None when it raised: the version then gets no copy (``TooSmall``
        quietly, anything else with a warning naming ``what``, ``leftovers`` removed) and is
        never tried again. The store answers instead either way."""
        try:
            return make()
        except TooSmall:  # a store this small answers as quickly; the next version may not be
            self.failed(key)
        except Exception as exc:
            log.warning("no %s copy of data version %s: %s", what, key[0], exc)
            for path in leftovers:
                unlink(path)
            self.failed(key)
        return None

    def failed(self, key: VersionKey) -> None:
        with self.lock:
            self._failed.add(key)
            self._building = None

    def done(self) -> None:
        """Call with ``lock`` held."""
        self._building = None


def copy_name() -> str:
    """A new copy's file name without its suffix: this process's pid, then a random part."""
    return f"{os.getpid()}-{secrets.token_hex(4)}"


def remove_orphans(
    folder: Path, pattern: str, held: Path | None, unlink: Callable[[Path], None]
) -> None:
    """Copies left by processes that are gone (killed before they could remove theirs), or by an
    earlier process with this one's pid (a container restarted): every ``pattern`` file but
    ``held`` and what shares its name."""
    for path in folder.glob(pattern):
        pid = path.name.split("-", 1)[0]
        if held is not None and path.name.startswith(held.name):
            continue
        if pid.isdigit() and (int(pid) == os.getpid() or not pid_alive(int(pid))):
            unlink(path)
