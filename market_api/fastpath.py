"""The cache-first ASGI layer: a repeated GET is answered before Litestar routes it.

A cache hit is the common case and must be cheap (p99 of a few ms, and at 50 connections close
to a Litestar hello-world's throughput), so it skips routing, parameter parsing, validation,
the Response object and header encoding: one dict lookup by the raw request, two ``send``
calls with stored bytes. Anything else (a miss, another method, an error) goes to Litestar,
which validates, answers and stores the entry together with the raw spelling it came in by.
The routes stay declared in Litestar, so the OpenAPI schema describes them exactly.

Content negotiation (``request_format``) and ``If-None-Match`` (``etag_matches``) live here
because both paths must decide them the same way. So does HEAD: it is answered as the GET it
mirrors (cache hit or Litestar, same status and headers, ``Content-Length`` included) with the
body dropped, and ``Allow`` (on a 405 or an ``OPTIONS``) lists it beside GET. Litestar alone
would need a second handler per route, and would still send the body.
"""

from __future__ import annotations

import functools
from typing import cast

from litestar.types import ASGIApp, Message, Receive, Scope, Send

from market_api.cache import CachedResponse, Format, RawKey, ResponseCache

RAW_KEY_SCOPE_KEY = "market_api.raw_key"
"""Where the fast path leaves the raw key (and ``If-None-Match``) for the Litestar handler."""


@functools.lru_cache(maxsize=256)
def request_format(accept: bytes | None) -> Format:
    """CSV only if the client prefers ``text/csv`` strictly over JSON; JSON otherwise.

    Quality values count (``text/csv;q=0.5, application/json`` is JSON), an exact media type
    beats a wildcard, and a tie, a missing header or anything unknown gives JSON."""
    if not accept:
        return "json"
    csv_q = _quality(accept, b"text/csv", b"text/*")
    json_q = _quality(accept, b"application/json", b"application/*")
    return "csv" if csv_q > json_q else "json"


def _quality(accept: bytes, exact: bytes, family: bytes) -> float:
    found: dict[bytes, float] = {}
    for media_range in accept.lower().split(b","):
        media, *params = (part.strip() for part in media_range.split(b";"))
        q = 1.0
        for param in params:
            if param.startswith(b"q="):
                try:
                    q = float(param[2:])
                except ValueError:
                    q = 0.0
        found.setdefault(media, q)
    for media in (exact, family, b"*/*"):
        if media in found:
            return found[media]
    return 0.0


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
    """Wraps Litestar's ASGI handler; serves GETs (and HEADs) whose raw spelling is cached."""

    def __init__(self, app: ASGIApp, cache: ResponseCache) -> None:
        self._app = app
        self._cache = cache

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            method = scope["method"]  # type: ignore[typeddict-item]
            if method == "HEAD":
                scope = cast(Scope, {**scope, "method": "GET"})
                send = headers_only(send)
            elif method != "GET":
                await self._app(scope, receive, allowing_head(send))
                return
            accept: bytes | None = None
            if_none_match: bytes | None = None
            for name, value in scope["headers"]:
                if name == b"accept":
                    accept = value
                elif name == b"if-none-match":
                    if_none_match = value
            raw: RawKey = (scope["path"], scope["query_string"], request_format(accept))
            entry = self._cache.get_raw(raw)
            if entry is not None:
                await send_cached(send, entry, if_none_match)
                return
            cast(dict[str, object], scope)[RAW_KEY_SCOPE_KEY] = (raw, if_none_match)
        await self._app(scope, receive, send)


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
