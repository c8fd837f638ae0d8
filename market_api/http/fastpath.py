"""The cache-first ASGI layer in front of Litestar: the API as served.

A hit is one dict lookup and two ``send`` calls with stored bytes; anything else goes to
Litestar, and a cacheable 200 is stored on its way out (one past ``max_answer_bytes`` streams
through instead). HEAD, ``If-None-Match`` and a single ``Range`` are answered here too.
docs/design/api-internals.md ("The fast path") says why this layer and not Litestar's own
response cache.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, cast

import msgspec
from litestar import Litestar
from litestar.types import HTTPResponseStartEvent, Message, Receive, Scope, Send

from market_api.http.cache import (
    CACHE_CONTROL,
    CachedResponse,
    CacheKey,
    ResponseCache,
    build_response,
)
from market_api.http.errors import ApiError, ErrorBody, as_api_error
from market_api.http.negotiation import MEDIA_TYPES, Format, negotiate
from market_api.http.ranges import ByteRange, RangeSlicer, parse_range
from market_api.readers.errors import ReadError

log = logging.getLogger(__name__)


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


@dataclass(frozen=True, slots=True)
class Conditions:
    """What a GET makes its answer depend on besides the key: ``If-None-Match``, ``Range`` and
    ``If-Range``."""

    if_none_match: bytes | None = None
    byte_range: ByteRange | None = None
    if_range: bytes | None = None

    def range_for(self, etag: bytes | None) -> ByteRange | None:
        """The range to serve of an answer tagged ``etag``: none when ``If-Range`` names
        another version of it (or a date, which is never compared), as RFC 9110 says."""
        if self.byte_range is None or self.if_range is None:
            return self.byte_range
        return self.byte_range if etag is not None and self.if_range.strip() == etag else None


@dataclass(frozen=True, slots=True)
class Refused:
    """A request the guard answers itself: ``error`` (and ``headers``) through ``send``."""

    send: Send
    error: ApiError
    headers: Sequence[tuple[bytes, bytes]] = ()


class Guard(Protocol):
    """What every HTTP request meets first, hits included (``market_api.access``: the key,
    the rate limit, CORS headers): the ``send`` to answer with, or a refusal."""

    def admit(self, scope: Scope, send: Send) -> Send | Refused: ...


class CacheFirst:
    """The ASGI app ``create_app()`` returns: cached GETs (and HEADs) answered here, the rest by
    Litestar (``app``), whose cacheable answers are stored on the way out."""

    def __init__(self, app: Litestar, cache: ResponseCache, guard: Guard | None = None) -> None:
        self.app = app
        self.cache = cache
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan: Litestar starts and stops the service
            await self.app(scope, receive, send)
            return
        if self.guard is not None:
            admitted = self.guard.admit(scope, send)
            if isinstance(admitted, Refused):
                await send_error(admitted.send, admitted.error, admitted.headers)
                return
            send = admitted
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
        if_none_match = byte_range = if_range = None
        for name, value in scope["headers"]:
            if name == b"accept":
                accept = value if accept is None else accept + b", " + value
            elif name == b"if-none-match":
                if_none_match = value
            elif name == b"range":
                byte_range = value
            elif name == b"if-range":
                if_range = value
        query = scope["query_string"]
        key: CacheKey = (scope["path"], query, negotiate(accept, query))
        asked = Conditions(if_none_match, parse_range(byte_range), if_range)
        entry = self.cache.get(key)
        if entry is None:
            await self._fetch(key, scope, receive, send, asked)
            return
        scope["path_template"] = entry.route  # the route it was stored by (``market_api.ops``)
        await send_cached(send, entry, asked)

    async def _fetch(
        self, key: CacheKey, scope: Scope, receive: Receive, send: Send, asked: Conditions
    ) -> None:
        """Ask Litestar. A cacheable 200 within ``max_answer_bytes`` is stored (if the data
        version did not change meanwhile) and sent as a hit would be, as soon as its last
        byte comes: a streamed answer's task waits for the client to go before it returns."""
        generation, version = self.cache.snapshot()

        async def complete(capture: Capture) -> None:
            assert capture.content_type is not None
            entry = build_response(
                key, b"".join(capture.body), capture.content_type, version, capture.etag,
                capture.headers,
            )  # fmt: skip
            entry.route = routed.get("path_template", "")
            self.cache.put(entry, generation)
            await send_cached(send, entry, asked)

        capture = Capture(send, self.cache.max_answer_bytes, asked, complete)
        routed = as_asked(scope, key[2])
        try:
            await self.app(routed, receive, capture)
        except Exception as exc:
            if not await capture.failed(exc):
                raise
            log.info("%s answered %s after its start: %s", scope["path"], type(exc).__name__, exc)
        finally:  # the route Litestar matched, for the metrics (``market_api.ops``)
            if "path_template" in routed:
                scope["path_template"] = routed["path_template"]


def is_stream(path: str) -> bool:
    """The push streams (``market_api.stream``): ``/stream`` and ``/instruments/{s}/stream``."""
    return path.endswith("/stream")


def as_asked(scope: Scope, fmt: Format) -> Scope:
    """The miss as Litestar sees it: a GET (also for a HEAD) accepting just the negotiated
    format, so the answer is the one stored under the key. Without ``Origin``: CORS headers
    depend on the caller, so the guard adds them to every answer, stored ones included."""
    headers = [(n, v) for n, v in scope["headers"] if n != b"accept" and n != b"origin"]
    headers.append((b"accept", MEDIA_TYPES[fmt].encode()))
    return cast(Scope, {**scope, "method": "GET", "headers": headers})


_CACHE_CONTROL = CACHE_CONTROL.encode()


class Capture:
    """``send`` for a miss: holds back a cacheable 200 (status, headers, body) up to ``bound``
    bytes and passes everything else on unchanged.

    A body that grows past ``bound`` is not cached: the held part and the rest go to the client
    as they come (or, for a ``Range``, only the asked bytes are kept and sent at the end), so a
    large answer is never whole in memory."""

    def __init__(
        self,
        send: Send,
        bound: int,
        asked: Conditions,
        complete: Callable[[Capture], Awaitable[None]],
    ) -> None:
        self._send = send
        self._complete = complete
        self._bound = bound
        self._asked = asked
        self.content_type: bytes | None = None
        self.etag: bytes | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self._size = 0
        self._start: Message | None = None
        self._passing = True
        """Messages go to the client as they come: not a cacheable 200, or one past the bound."""
        self._slicer: RangeSlicer | None = None
        self._dropping = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self._hold_if_cacheable(cast(HTTPResponseStartEvent, message))
            if self._start is not None:
                return
        elif message["type"] == "http.response.body" and not self._passing:
            chunk = message.get("body", b"")
            more = message.get("more_body", False)
            if self._slicer is not None:
                self._slicer.feed(chunk)
                if not more:
                    await self._send_range()
                return
            if self._dropping:
                return
            self.body.append(chunk)
            self._size += len(chunk)
            if not more:
                self._passing = True
                await self._complete(self)
            elif self._size > self._bound:
                await self._overflow()
            return
        await self._send(message)

    def _hold_if_cacheable(self, message: HTTPResponseStartEvent) -> None:
        self._start, self.content_type, self.body, self._passing = None, None, [], True
        headers = [(bytes(name), bytes(value)) for name, value in message.get("headers", ())]
        named = dict(headers)
        if message["status"] == 200 and named.get(b"cache-control") == _CACHE_CONTROL:
            self._start, self._passing = message, False
            self.content_type = named.get(b"content-type", b"application/octet-stream")
            self.etag = named.get(b"etag")
            self.headers = headers

    async def _overflow(self) -> None:
        """Past the bound: serve without caching (a 304, a range, or the stream as it comes)."""
        assert self._start is not None
        held, self.body = b"".join(self.body), []
        if etag_matches(self._asked.if_none_match, self.etag or b""):
            self._dropping = True
            await send_not_modified(self._send, not_modified_headers(self.headers))
            return
        wanted = self._asked.range_for(self.etag)
        if wanted is not None:
            self._slicer = RangeSlicer(wanted)
            self._slicer.feed(held)
            return
        self._passing = True
        await self._send(self._start)
        await self._send({"type": "http.response.body", "body": held, "more_body": True})

    async def _send_range(self) -> None:
        assert self._slicer is not None
        found = self._slicer.result()
        await send_partial(self._send, self.headers, self._slicer.length, found)

    async def failed(self, exc: Exception) -> bool:
        """The answer failed part way; True if that was answered here. Before anything reached
        the client, a domain error is answered as such (``as_api_error``). After, or for any
        other error, the held bytes go out and the caller's re-raise cuts the connection, so
        the client sees a truncated body, never a short one that looks whole."""
        if self._passing or self._start is None:
            return False
        self._passing = True
        cause = read_error(exc)
        if cause is not None:
            await send_error(self._send, as_api_error(cause))
            return True
        if not self._dropping and self._slicer is None:
            await self._send(self._start)
            held, self.body = b"".join(self.body), []
            await self._send({"type": "http.response.body", "body": held, "more_body": True})
        return False


def read_error(exc: BaseException | None) -> ReadError | None:
    """The domain error behind ``exc`` (Litestar wraps one raised after the response began)."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, ReadError):
            return exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def not_modified_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [(name, value) for name, value in headers if name in _VALIDATORS]


_VALIDATORS = frozenset({b"etag", b"cache-control", b"vary"})


async def send_not_modified(send: Send, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": 304, "headers": headers})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def send_partial(
    send: Send,
    headers: list[tuple[bytes, bytes]],
    length: int,
    found: tuple[int, int, bytes] | None,
) -> None:
    """A 206 with the bytes ``found`` of an answer of ``length`` bytes, or a 416 if the range
    cannot be satisfied."""
    kept = [(n, v) for n, v in headers if n not in (b"content-length", b"content-range")]
    if found is None:
        await send({"type": "http.response.start", "status": 416, "headers": [
            (b"content-range", f"bytes */{length}".encode()), (b"content-length", b"0"),
            *[(n, v) for n, v in kept if n in _VALIDATORS]]})  # fmt: skip
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    start, end, body = found
    partial = [
        *kept,
        (b"content-range", f"bytes {start}-{end}/{length}".encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": 206, "headers": partial})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_error(
    send: Send, error: ApiError, extra: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    """The one error shape (``http/errors.py``), sent from here where Litestar cannot."""
    body = msgspec.json.encode(
        ErrorBody(error.status_code, error.error, error.detail, error.parameter)
    )
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]  # fmt: skip
    if error.retry_after_seconds is not None:
        headers.append((b"retry-after", str(error.retry_after_seconds).encode()))
    headers.extend(extra)
    await send({"type": "http.response.start", "status": error.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_cached(send: Send, entry: CachedResponse, asked: Conditions) -> None:
    if etag_matches(asked.if_none_match, entry.etag):
        await send_not_modified(send, entry.not_modified_headers)
        return
    wanted = asked.range_for(entry.etag)
    if wanted is not None:
        span = wanted.resolve(len(entry.body))
        found = None if span is None else (*span, entry.body[span[0] : span[1] + 1])
        await send_partial(send, entry.headers, len(entry.body), found)
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
