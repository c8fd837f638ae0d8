"""The cache-first layer, counted: every HTTP request's route, status and time to its response's
start goes to the tally (``tally.py``), hits included."""

from __future__ import annotations

from time import perf_counter
from typing import Any

from litestar.types import Message, Receive, Scope, Send

from market_api.http.fastpath import CacheFirst
from market_api.ops.tally import OTHER_ROUTE, RequestTally


class Measured(CacheFirst):
    """``CacheFirst`` with a tally. The route is the template Litestar matched (the fast path
    puts a hit's, stored with its answer, in the scope), never the raw path: a label per
    symbol would grow without bound."""

    def __init__(self, *args: Any, tally: RequestTally, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tally = tally

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        seen = Seen(send, perf_counter())
        try:
            await super().__call__(scope, receive, seen)
        finally:
            answered = seen.answered_at if seen.answered_at is not None else perf_counter()
            route = scope.get("path_template") or OTHER_ROUTE
            self.tally.observe(route, seen.status, answered - seen.started_at)


class Seen:
    """``send`` that notes the status and when the response started (500 if it never did)."""

    __slots__ = ("_send", "answered_at", "started_at", "status")

    def __init__(self, send: Send, started_at: float) -> None:
        self._send = send
        self.started_at = started_at
        self.answered_at: float | None = None
        self.status = 500

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.answered_at = perf_counter()
        await self._send(message)
