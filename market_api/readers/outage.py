"""An outage of the store as one story in the log: when it began, a reminder now and then, and
when it ended, however many reads and reconnects failed in between.

The lake reader tries to reconnect every second and its poll runs ten times a second; a warning
for each failure would be a screenful a minute, all saying the same thing.
"""

from __future__ import annotations

import logging
import threading
import time

REMIND_SECONDS = 60.0
"""While the outage lasts, one warning this often says it still does."""


class Outage:
    """Whether ``what`` is unreachable, as the last attempt found it, told once per outage."""

    def __init__(
        self, log: logging.Logger, what: str, remind_seconds: float = REMIND_SECONDS
    ) -> None:
        self._log = log
        self._what = what
        self._remind_seconds = remind_seconds
        self._lock = threading.Lock()
        self._since: float | None = None
        self._reminded = 0.0
        self._failures = 0

    def failed(self, reason: str) -> None:
        """An attempt could not reach it; ``reason`` must already be redacted."""
        reason = " ".join(reason.split())  # libpq's messages span lines
        now = time.monotonic()
        with self._lock:
            self._failures += 1
            if self._since is None:
                self._since = self._reminded = now
                self._log.warning(
                    "%s cannot be reached (%s); cache misses get 503 until it is back, "
                    "reconnecting meanwhile",
                    self._what,
                    reason,
                )
            elif now - self._reminded >= self._remind_seconds:
                self._reminded = now
                self._log.warning(
                    "%s still cannot be reached after %.0f s (%d failed attempts): %s",
                    self._what,
                    now - self._since,
                    self._failures,
                    reason,
                )
            else:
                self._log.debug("%s still unreachable: %s", self._what, reason)

    def ended(self) -> None:
        """An attempt reached it: close the outage, if there was one."""
        if self._since is None:
            return
        with self._lock:
            if self._since is None:
                return
            lasted, failures = time.monotonic() - self._since, self._failures
            self._since, self._failures = None, 0
        self._log.info(
            "%s reached again after %.1f s (%d failed attempts)", self._what, lasted, failures
        )
