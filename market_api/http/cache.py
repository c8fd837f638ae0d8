"""The LRU of finished 200 answers, emptied when the reader's data version changes.

An entry is keyed by the request as it arrived (path, query string, negotiated format), so the
fast path finds it with one dict lookup. docs/design/api-internals.md ("The response cache")
says why, and how a miss computed under an old version is kept out. An answer bigger than
``max_answer_bytes`` is streamed past the cache, never kept.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from market_api.http.negotiation import Format

CacheKey = tuple[str, bytes, Format]
"""A request as it arrived: path, query string, negotiated format."""

CACHE_CONTROL = "public, max-age=0, must-revalidate"
"""Sent with every cacheable answer; also what tells the ASGI layer that it may store one."""
VARY = "accept"
CACHEABLE_HEADERS = {"cache-control": CACHE_CONTROL, "vary": VARY}
"""What a route's 200 answer carries for the fast path to store it."""
_ENTRY_OVERHEAD = 512  # the entry object, its key, dict slots: a generous flat estimate
_BUILT = frozenset({b"content-type", b"content-length", b"etag", b"cache-control", b"vary"})
"""The headers ``build_response`` writes itself; a route's others (``missing-symbols``) ride
along in the entry."""


@dataclass(eq=False)
class CachedResponse:
    key: CacheKey
    body: bytes
    etag: bytes
    headers: list[tuple[bytes, bytes]]
    """The full header list of the 200 answer, as it is sent."""
    not_modified_headers: list[tuple[bytes, bytes]]
    size: int
    route: str = ""
    """The route template Litestar matched when the answer was made (the metrics' label)."""


def build_response(
    key: CacheKey,
    body: bytes,
    content_type: bytes,
    version: str | None,
    etag: bytes | None = None,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> CachedResponse:
    """Wrap an encoded body with its headers; the ETag hashes data version, media type and body,
    unless the route sent one (``question_etag``: a streamed answer cannot be hashed first).

    The body is part of the hash so that an ETag never outlives its content, even in the few
    milliseconds between a commit and the version that announces it."""
    if etag is None:
        digest = hashlib.blake2b(digest_size=12)
        digest.update((version or "-").encode())
        digest.update(content_type)
        digest.update(body)
        etag = b'"' + digest.hexdigest().encode() + b'"'
    shared = [(b"etag", etag), (b"cache-control", CACHE_CONTROL.encode()), (b"vary", VARY.encode())]
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        *shared,
        *[(name, value) for name, value in extra or () if name not in _BUILT],
    ]
    header_bytes = sum(len(name) + len(value) for name, value in headers + shared)
    size = len(body) + header_bytes + len(key[0]) + len(key[1]) + _ENTRY_OVERHEAD
    return CachedResponse(key, body, etag, headers, shared, size)


def question_etag(version: str | None, media_type: str, question: str) -> str:
    """The ETag of an answer known before its body: data version, media type and the normalized
    question (``aapl`` and ``AAPL`` are one), so a streamed answer needs no hashing of its bytes
    and a 304 needs no query. Its content is fixed by those three: a page reads one version."""
    digest = hashlib.blake2b(digest_size=12)
    for part in (version or "-", media_type, question):
        digest.update(part.encode())
        digest.update(b"\0")
    return f'"q{digest.hexdigest()}"'


class ResponseCache:
    """Thread-safe LRU bounded in entries and bytes; emptied when the data version changes.

    An answer over ``max_answer_bytes`` is never stored: the fast path streams it to the client
    instead of holding it whole (``http/fastpath.py``)."""

    def __init__(
        self,
        max_entries: int,
        max_bytes: int,
        data_version: Callable[[], str | None],
        max_answer_bytes: int = 1024 * 1024,
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_answer_bytes = max_answer_bytes
        self._data_version = data_version
        self._lock = threading.Lock()
        self._entries: OrderedDict[CacheKey, CachedResponse] = OrderedDict()
        self._bytes = 0
        self._version = data_version()
        self._generation = 0
        self.hits = self.misses = self.hit_bytes = 0
        """Lookups that found an answer, that did not, and the found answers' body bytes."""

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def snapshot(self) -> tuple[int, str | None]:
        """The generation and data version a miss is computed under (pass both to ``put``)."""
        with self._lock:
            return self._generation, self._version

    def get(self, key: CacheKey) -> CachedResponse | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                self.hit_bytes += len(entry.body)
            else:
                self.misses += 1
            return entry

    def put(self, entry: CachedResponse, generation: int) -> bool:
        """Store ``entry`` unless the data changed since ``generation`` or it cannot fit."""
        with self._lock:
            if generation != self._generation or entry.size > self.max_bytes:
                return False
            if len(entry.body) > self.max_answer_bytes:
                return False
            if self.max_entries == 0:
                return False
            old = self._entries.pop(entry.key, None)
            if old is not None:
                self._bytes -= old.size
            self._entries[entry.key] = entry
            self._bytes += entry.size
            self._evict()
            return True

    def poll(self) -> bool:
        """Empty the cache if the data version changed; True if it did."""
        version = self._data_version()
        with self._lock:
            if version == self._version:
                return False
            self._version = version
            self._generation += 1
            self._entries.clear()
            self._bytes = 0
        return True

    def _evict(self) -> None:
        while self._entries and (
            len(self._entries) > self.max_entries or self._bytes > self.max_bytes
        ):
            _, entry = self._entries.popitem(last=False)
            self._bytes -= entry.size
