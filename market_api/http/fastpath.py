"""The cache-first ASGI layer in front of Litestar: the API as served.

A hit is one dict lookup and two ``send`` calls with stored bytes; anything else goes to
Litestar, and a cacheable 200 is stored on its way out. HEAD and ``If-None-Match`` are answered
here too. docs/design/api-internals.md ("The fast path") says why this layer and not
Litestar's own response cache.
"""

from __future__ import annotations

from typing import cast

from litestar import Litestar
from litestar.types import Message, Receive, Scope, Send

from market_api.http.cache import (
    CACHE_CONTROL,
    CachedResponse,
    CacheKey,
    ResponseCache,
    build_response,
)
from market_api.http.negotiation import MEDIA_TYPES, Format, request_format


def etag_matches(if_none_match: bytes | None, etag: bytes) -> bool:
    """``If-None-Match`` semantics for GET: weak comparison, ``*`` matches anything."""
    if not if_none_match:
        return False
    if if_none_match.strip() == b"*":
        return True
    for candidate in if_none_match.split(b","):
        tag = candidate.strip()
        if tag.startswith(b"W/"):
            tag = tag[2:]
        if tag == etag:
            return True
    return False


class CacheFirst:
    """The ASGI app ``create_app()`` returns: cached GETs (and HEADs) answered here, the rest by
    Litestar (``app``), whose cacheable answers are stored on the way out."""

    def __init__(self, app: Litestar, cache: ResponseCache) -> None:
        self.app = app
        self.cache = cache

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan: Litestar starts and stops the service
            await self.app(scope, receive, send)
            return
        method = scope["method"]  # type: ignore[typeddict-item]
        if is_stream(scope["path"]):  # a push stream: nothing to cache, nothing to store
            await self.app(scope, receive, send)
            return
        if method == "HEAD":
            send = headers_only(send)
        elif method != "GET":
            await self.app(scope, receive, allowing_head(send))
            return
        accept: bytes | None = None
        if_none_match: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"accept":
                accept = value if accept is None else accept + b", " + value
            elif name == b"if-none-match":
                if_none_match = value
        key: CacheKey = (scope["path"], scope["query_string"], request_format(accept))
        entry = self.cache.get(key)
        if entry is None:
            entry = await self._fetch(key, scope, receive, send)
            if entry is None:
                return  # Litestar answered: not a cacheable 200
        await send_cached(send, entry, if_none_match)

    async def _fetch(
        self, key: CacheKey, scope: Scope, receive: Receive, send: Send
    ) -> CachedResponse | None:
        """Ask Litestar; a cacheable 200 comes back as an entry (stored if the data version
        did not change meanwhile), anything else has been sent as it came."""
        generation, version = self.cache.snapshot()
        capture = Capture(send)
        await self.app(as_asked(scope, key[2]), receive, capture)
        if capture.content_type is None:
            return None
        entry = build_response(key, b"".join(capture.body), capture.content_type, version)
        self.cache.put(entry, generation)
        return entry


def is_stream(path: str) -> bool:
    """The push streams (``market_api.stream``): ``/stream`` and ``/instruments/{s}/stream``."""
    return path.endswith("/stream")


def as_asked(scope: Scope, fmt: Format) -> Scope:
    """The miss as Litestar sees it: a GET (also for a HEAD) accepting just the negotiated
    format, so the answer is the one stored under the key."""
    headers = [(name, value) for name, value in scope["headers"] if name != b"accept"]
    headers.append((b"accept", MEDIA_TYPES[fmt].encode()))
    return cast(Scope, {**scope, "method": "GET", "headers": headers})


_CACHE_CONTROL = CACHE_CONTROL.encode()


class Capture:
    """``send`` for a miss: holds back a cacheable 200 (status, content type, body) and passes
    everything else on unchanged."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.content_type: bytes | None = None
        self.body: list[bytes] = []

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.content_type, self.body = None, []
            headers = dict(message.get("headers", ()))
            if message["status"] == 200 and headers.get(b"cache-control") == _CACHE_CONTROL:
                self.content_type = headers.get(b"content-type", b"application/octet-stream")
                return
        elif message["type"] == "http.response.body" and self.content_type is not None:
            self.body.append(message.get("body", b""))
            return
        await self._send(message)


async def send_cached(send: Send, entry: CachedResponse, if_none_match: bytes | None) -> None:
    if etag_matches(if_none_match, entry.etag):
        await send(
            {"type": "http.response.start", "status": 304, "headers": entry.not_modified_headers}
        )
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    await send({"type": "http.response.start", "status": 200, "headers": entry.headers})
    await send({"type": "http.response.body", "body": entry.body, "more_body": False})


def headers_only(send: Send) -> Send:
    """``send`` for a HEAD: the GET's status and headers, an empty body."""

    async def send_headers_only(message: Message) -> None:
        if message["type"] == "http.response.body":
            if message.get("more_body", False):
                return
            message = {"type": "http.response.body", "body": b"", "more_body": False}
        await send(message)

    return send_headers_only


def allowing_head(send: Send) -> Send:
    """``send`` whose ``Allow`` header, where it lists GET, lists HEAD too."""

    async def send_allowing_head(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [
                (name, value + b", HEAD")
                if name.lower() == b"allow" and b"GET" in value and b"HEAD" not in value
                else (name, value)
                for name, value in message.get("headers", ())
            ]
            message = {**message, "headers": headers}
        await send(message)

    return send_allowing_head
