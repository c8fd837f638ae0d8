"""CORS headers on every answer, cached ones included, from Litestar's own ``CORSConfig``.

Litestar answers the preflight (``OPTIONS``) and adds the headers to what it answers itself;
the fast path serves stored bytes without it, so the headers are set here, per caller, on the
way out (the stored answers never hold them: ``fastpath.as_asked`` drops ``Origin``).
"""

from __future__ import annotations

from litestar.config.cors import CORSConfig
from litestar.types import Message, Scope, Send

EXPOSED_HEADERS = (
    "etag",
    "next-page-token",
    "missing-symbols",
    "retry-after",
    "ratelimit",
    "ratelimit-policy",
    "content-range",
)
"""The answer headers a browser's script may read: paging, caching, rate limits."""


def cors_config(origins: tuple[str, ...]) -> CORSConfig | None:
    """``MARKET_API_CORS_ORIGINS`` as Litestar's config; None (no CORS) when empty."""
    if not origins:
        return None
    return CORSConfig(
        allow_origins=list(origins),
        allow_methods=["GET", "HEAD", "OPTIONS"],
        allow_headers=["authorization", "x-api-key", "last-event-id", "if-none-match", "range"],
        expose_headers=list(EXPOSED_HEADERS),
    )


class CorsHeaders:
    """Adds the headers Litestar's CORS middleware would, as a ``send`` wrapper."""

    def __init__(self, config: CORSConfig) -> None:
        self.config = config
        self._always = [(k.lower().encode(), v.encode()) for k, v in config.simple_headers.items()]
        self._always += [
            (
                b"access-control-allow-headers",
                ", ".join(sorted(set(config.allow_headers))).encode(),
            ),
            (
                b"access-control-allow-methods",
                ", ".join(sorted(set(config.allow_methods))).encode(),
            ),
        ]

    def wrap(self, scope: Scope, send: Send) -> Send:
        origin = next((v for n, v in scope["headers"] if n == b"origin"), None)
        if origin is None:
            return send
        extra = list(self._always)
        vary = False
        if not self.config.is_allow_all_origins and self.config.is_origin_allowed(
            origin.decode("latin-1")
        ):
            extra.append((b"access-control-allow-origin", origin))
            vary = True

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (bytes(n), bytes(v))
                    for n, v in message.get("headers", ())
                    if not bytes(n).lower().startswith(b"access-control-")
                ]
                if vary:
                    headers = with_vary_origin(headers)
                message = {**message, "headers": [*headers, *extra]}
            await send(message)

        return send_with_cors


def with_vary_origin(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """``Vary`` with ``Origin`` added to what it names (Litestar's middleware replaces it)."""
    out, seen = [], False
    for name, value in headers:
        if name.lower() == b"vary":
            seen = True
            if b"origin" not in value.lower():
                value = value + b", Origin"
        out.append((name, value))
    return out if seen else [*out, (b"vary", b"Origin")]
