"""The keys one API process accepts: an in-memory map, read again from the store every
``refresh_seconds`` (a revoke is refused everywhere within that plus a request), and each key's
last use written back in batches, never per request."""

from __future__ import annotations

import hmac
import logging
import threading
import time
from datetime import UTC, datetime

from market_api.access.keys import ActiveKey, KeyStoreUnavailable, digest, lookup_of
from market_api.access.stores import KeyStore

log = logging.getLogger(__name__)

REFRESH_SECONDS = 1.0
FLUSH_SECONDS = 5.0


class KeyRing:
    def __init__(
        self,
        store: KeyStore,
        refresh_seconds: float = REFRESH_SECONDS,
        flush_seconds: float = FLUSH_SECONDS,
    ) -> None:
        self._store = store
        self._refresh = refresh_seconds
        self._flush_every = flush_seconds
        self._keys: dict[str, ActiveKey] = {}
        self._used: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def match(self, key: str) -> str | None:
        """The lookup of ``key`` if it is active, else None; compared in constant time."""
        lookup = lookup_of(key)
        if lookup is None:
            return None
        found = self._keys.get(lookup)
        if found is None or not hmac.compare_digest(found.digest, digest(key)):
            return None
        self._used[lookup] = time.time()
        return lookup

    def load(self) -> None:
        """Read the active keys now; on failure keep the last ones (and say so)."""
        try:
            self._keys = self._store.active()
        except KeyStoreUnavailable as exc:
            log.warning("API keys not refreshed, the last known ones still apply: %s", exc)

    def flush(self) -> None:
        used, self._used = self._used, {}
        if not used:
            return
        try:
            self._store.touch({k: datetime.fromtimestamp(t, UTC) for k, t in used.items()})
        except KeyStoreUnavailable as exc:
            log.warning("API keys' last use not recorded: %s", exc)

    def start(self) -> None:
        """Load the keys, then keep them current in a daemon thread (Litestar's on_startup,
        so each granian worker runs its own after the fork)."""
        if self._thread is not None:
            return
        self.load()
        self._thread = threading.Thread(target=self._follow, name="api-keys", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.flush()
        self._store.close()

    def _follow(self) -> None:
        flushed = time.monotonic()
        while not self._stop.wait(self._refresh):
            self.load()
            if time.monotonic() - flushed >= self._flush_every:
                self.flush()
                flushed = time.monotonic()
