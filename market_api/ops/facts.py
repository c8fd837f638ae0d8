"""What the store says about itself, for ``/ready`` and ``/metrics``: its newest bar (asked once
per data version) and how old that version is."""

from __future__ import annotations

import time
from datetime import date

import anyio
import anyio.to_thread

from market_api.bars.queries import newest_bar_date
from market_api.readers import Reader
from market_api.readers.errors import StoreUnavailable

ASK_SECONDS = 2.0
"""How long a probe or a scrape waits for the store: a probe's caller gives up at about 1 s."""


class StoreFacts:
    """The newest bar of the current data version, remembered until the version changes, so a
    probe or scrape touches the store once per load (and never while a loader holds it)."""

    def __init__(self, reader: Reader, retry_after_seconds: int) -> None:
        self._reader = reader
        self._retry_after = retry_after_seconds
        self._known: tuple[str | None, date | None] | None = None
        self._seen: tuple[str | None, float] = (None, time.time())

    def version(self) -> str | None:
        return self._reader.data_version()

    async def newest_bar(self) -> date | None:
        """The newest bar's date (``None``: no bars); ``StoreUnavailable`` if the store does
        not answer within ``ASK_SECONDS``."""
        version = self._reader.data_version()
        known = self._known
        if known is not None and known[0] == version:
            return known[1]
        with anyio.move_on_after(ASK_SECONDS):
            newest = await anyio.to_thread.run_sync(
                self._reader.run_at, version, newest_bar_date, abandon_on_cancel=True
            )
            self._known = (version, newest)
            return newest
        raise StoreUnavailable(
            f"the store did not answer within {ASK_SECONDS:.0f} s", self._retry_after
        )

    def version_age(self, now: float) -> float | None:
        """Seconds since the current data version was published, ``None`` before the first
        load. The file's versions carry their time; a lake snapshot's age counts from when this
        process first saw it (docs/metrics.md)."""
        version = self._reader.data_version()
        if version is None:
            return None
        published = published_at(version)
        if published is None:
            if self._seen[0] != version:
                self._seen = (version, now)
            published = self._seen[1]
        return max(0.0, now - published)


def published_at(version: str) -> float | None:
    """The Unix time a file-mode version was made (``market_core.data_version.new_version``:
    hex nanoseconds, a dash, a random tag), else ``None``."""
    head, dash, _ = version.partition("-")
    if not dash:
        return None
    try:
        return int(head, 16) / 1e9
    except ValueError:
        return None
