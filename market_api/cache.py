"""The LRU of encoded responses, and its invalidation by the pipeline's data version.

An entry is a finished response: body bytes, ETag and the exact header list, so a hit does no
DuckDB work, no encoding and no validation. Entries are keyed by the normalized request (the
question with upper-case symbol and parsed parameters, plus json/csv); each entry also
remembers up to ``MAX_ALIASES`` raw spellings of its request (path, query string, format) so
the ASGI fast path (``fastpath.py``) can find it with one dict lookup before Litestar parses
anything. Both bounds, entries and bytes, count everything an entry keeps alive.

The cache follows the data version its store's reader hands out (``StoreReader.data_version``:
the loaders' version record for the DuckDB file, a snapshot id for a lake). ``poll`` (from the
background thread) asks for it and, when it changed, empties the cache and bumps
``generation``. A miss computed against the old data but finished after the change carries the
old generation and is not stored, so no stale entry outlives the change.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Literal

Format = Literal["json", "csv"]
RawKey = tuple[str, bytes, Format]
"""A request as it arrived: path, query string, negotiated format."""

MAX_ALIASES = 4
"""Raw spellings remembered per entry; others still hit the entry after Litestar parses them."""

CACHE_CONTROL = b"public, max-age=0, must-revalidate"
_ENTRY_OVERHEAD = 512  # the entry object, its key, dict slots: a generous flat estimate
_ALIAS_OVERHEAD = 160

MEDIA_TYPES: dict[Format, bytes] = {
    "json": b"application/json",
    "csv": b"text/csv; charset=utf-8",
}


@dataclass(eq=False)
class CachedResponse:
    key: Hashable
    body: bytes
    etag: bytes
    headers: list[tuple[bytes, bytes]]
    """The full header list of the 200 answer, as the fast path sends it."""
    not_modified_headers: list[tuple[bytes, bytes]]
    size: int
    aliases: list[RawKey] = field(default_factory=list)


def build_response(key: Hashable, body: bytes, fmt: Format, version: str | None) -> CachedResponse:
    """Wrap an encoded body with its headers; the ETag hashes data version, query and body.

    The body is part of the hash so that an ETag never outlives its content, even in the few
    milliseconds between a commit and the version file that announces it."""
    digest = hashlib.blake2b(digest_size=12)
    digest.update((version or "-").encode())
    digest.update(repr(key).encode())
    digest.update(body)
    etag = b'"' + digest.hexdigest().encode() + b'"'
    shared = [(b"etag", etag), (b"cache-control", CACHE_CONTROL), (b"vary", b"accept")]
    headers = [
        (b"content-type", MEDIA_TYPES[fmt]),
        (b"content-length", str(len(body)).encode()),
        *shared,
    ]
    header_bytes = sum(len(name) + len(value) for name, value in headers + shared)
    size = len(body) + header_bytes + len(repr(key)) + _ENTRY_OVERHEAD
    return CachedResponse(key, body, etag, headers, shared, size)


class ResponseCache:
    """Thread-safe LRU bounded in entries and bytes; emptied when the data version changes."""

    def __init__(
        self, max_entries: int, max_bytes: int, data_version: Callable[[], str | None]
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._data_version = data_version
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, CachedResponse] = OrderedDict()
        self._aliases: dict[RawKey, CachedResponse] = {}
        self._bytes = 0
        self._version = data_version()
        self._generation = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    @property
    def alias_count(self) -> int:
        return len(self._aliases)

    def snapshot(self) -> tuple[int, str | None]:
        """The generation and data version a miss is computed under (pass both to ``put``)."""
        with self._lock:
            return self._generation, self._version

    def get(self, key: Hashable) -> CachedResponse | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def get_raw(self, raw: RawKey) -> CachedResponse | None:
        """The fast path's lookup: by the request exactly as it arrived."""
        with self._lock:
            entry = self._aliases.get(raw)
            if entry is not None:
                self._entries.move_to_end(entry.key)
            return entry

    def put(self, entry: CachedResponse, raw: RawKey | None, generation: int) -> bool:
        """Store ``entry`` unless the data changed since ``generation`` or it cannot fit."""
        with self._lock:
            if generation != self._generation or entry.size > self.max_bytes:
                return False
            if self.max_entries == 0:
                return False
            old = self._entries.pop(entry.key, None)
            if old is not None:
                self._forget(old)
            self._entries[entry.key] = entry
            self._bytes += entry.size
            if raw is not None:
                self._add_alias(entry, raw)
            self._evict()
            return True

    def add_alias(self, entry: CachedResponse, raw: RawKey) -> None:
        """Let the fast path find ``entry`` by another spelling of its request."""
        with self._lock:
            if self._entries.get(entry.key) is entry:
                self._add_alias(entry, raw)
                self._evict()

    def poll(self) -> bool:
        """Empty the cache if the data version changed; True if it did."""
        version = self._data_version()
        with self._lock:
            if version == self._version:
                return False
            self._version = version
            self._generation += 1
            self._entries.clear()
            self._aliases.clear()
            self._bytes = 0
        return True

    def _add_alias(self, entry: CachedResponse, raw: RawKey) -> None:
        current = self._aliases.get(raw)
        if current is entry or len(entry.aliases) >= MAX_ALIASES:
            return
        if current is not None:
            current.aliases.remove(raw)
            cost = _alias_cost(raw)
            current.size -= cost
            self._bytes -= cost
        self._aliases[raw] = entry
        entry.aliases.append(raw)
        cost = _alias_cost(raw)
        entry.size += cost
        self._bytes += cost

    def _evict(self) -> None:
        while self._entries and (
            len(self._entries) > self.max_entries or self._bytes > self.max_bytes
        ):
            _, entry = self._entries.popitem(last=False)
            self._forget(entry)

    def _forget(self, entry: CachedResponse) -> None:
        for raw in entry.aliases:
            if self._aliases.get(raw) is entry:
                del self._aliases[raw]
        self._bytes -= entry.size


def _alias_cost(raw: RawKey) -> int:
    return len(raw[0]) + len(raw[1]) + _ALIAS_OVERHEAD
