"""The guard in front of everything (``fastpath.Guard``): the API key, the rate limit and
CORS headers, checked before the cache is looked at, so hits are guarded too.

Cheap by design, as it runs on every hit: one pass over the headers, one SHA-256 of the key,
a dict lookup and a constant-time comparison (bench/serving.py measures it).
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from litestar.types import Message, Scope, Send

from market_api.access.cors import CorsHeaders
from market_api.access.limits import FixedWindow
from market_api.access.ring import KeyRing
from market_api.http.docs import DOCS_PATH
from market_api.http.errors import ApiError
from market_api.http.fastpath import Refused, is_stream

OPEN_PATHS = frozenset({"/health", "/ready"})
"""Probes stay open, as does the docs page (below ``DOCS_PATH``); ``/metrics`` is not."""
QUERY_KEY = "api_key"
"""Where the push streams also take the key: a browser's EventSource cannot set headers."""
_BEARER = b"bearer "
_CHALLENGE = (b"www-authenticate", b'Bearer realm="market-data"')
_INVALID = (b"www-authenticate", b'Bearer realm="market-data", error="invalid_token"')
HOW = (
    "send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>' (the streams also take "
    f"?{QUERY_KEY}=); make api-key NAME=<name> creates one"
)


class Unauthorized(ApiError):
    status_code = 401
    error = "unauthorized"


class RateLimited(ApiError):
    status_code = 429
    error = "rate_limited"

    def __init__(self, detail: str, retry_after_seconds: int) -> None:
        super().__init__(detail)
        self.retry_after_seconds = retry_after_seconds


def is_open(path: str) -> bool:
    return path in OPEN_PATHS or path == DOCS_PATH or path.startswith(DOCS_PATH + "/")


def presented_key(scope: Scope) -> str | None:
    """The key the request carries; the query only counts on the streams. Never logged."""
    for name, value in scope["headers"]:
        if name == b"authorization" and value[:7].lower() == _BEARER:
            return value[7:].strip().decode("latin-1")
        if name == b"x-api-key":
            return value.strip().decode("latin-1")
    if is_stream(scope["path"]) and scope["query_string"]:
        query = scope["query_string"].decode("latin-1")
        for field, text in parse_qsl(query, keep_blank_values=True):
            if field == QUERY_KEY:
                return text
    return None


class Gate:
    """``ring`` None: auth off; ``limit`` None: no rate limit; ``cors`` None: no CORS."""

    def __init__(
        self, ring: KeyRing | None, limit: FixedWindow | None, cors: CorsHeaders | None
    ) -> None:
        self.ring = ring
        self.limit = limit
        self.cors = cors

    def admit(self, scope: Scope, send: Send) -> Send | Refused:
        if scope["method"] == "OPTIONS":  # type: ignore[typeddict-item]
            return send  # a preflight carries no key; Litestar's CORS config answers it
        if self.cors is not None:
            send = self.cors.wrap(scope, send)
        if is_open(scope["path"]):
            return send
        who: str | None = None
        if self.ring is not None:
            key = presented_key(scope)
            if key is None:
                return Refused(send, Unauthorized(f"an API key is required: {HOW}"), [_CHALLENGE])
            who = self.ring.match(key)
            if who is None:
                detail = f"the API key is malformed, unknown or revoked; {HOW}"
                return Refused(send, Unauthorized(detail), [_INVALID])
        if self.limit is None:
            return send
        if who is None:
            client = scope.get("client")
            who = client[0] if client else "-"
        verdict = self.limit.take(who)
        headers = self.limit.headers(verdict)
        if not verdict.allowed:
            quota = self.limit.quota
            detail = (
                f"over the rate limit of {quota.requests} requests per {quota.seconds} s; "
                f"retry after {verdict.reset_seconds} s"
            )
            return Refused(send, RateLimited(detail, verdict.reset_seconds), headers)
        return with_headers(send, headers)


def with_headers(send: Send, extra: list[tuple[bytes, bytes]]) -> Send:
    async def send_with(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), *extra]}
        await send(message)

    return send_with
