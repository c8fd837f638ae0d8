"""Between the routes and the reader: one app's cache, reader, factor steps and watch thread.

``respond`` answers a question in a worker thread and marks the answer cacheable; storing it,
its ETag and ``If-None-Match`` are the fast path's business (``market_api.http.fastpath``).
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from typing import Any

import anyio.to_thread
from litestar import Request, Response

from market_api.bars.factors import FactorCache
from market_api.bars.questions import BarsQuestion, Question, Read
from market_api.http.cache import CACHEABLE_HEADERS, ResponseCache
from market_api.http.negotiation import MEDIA_TYPES, Format, request_format
from market_api.readers import Reader
from market_api.settings import Settings

log = logging.getLogger(__name__)


class MarketService:
    """Owns the response cache, the reader and the background watch thread of one app. It
    never asks which reader it holds: the file and the lake answer the same interface."""

    def __init__(self, settings: Settings, reader: Reader) -> None:
        self.settings = settings
        self.reader = reader
        # The cache follows the reader's data version: the store's own change signal.
        self.cache = ResponseCache(
            settings.cache_entries, settings.cache_bytes, reader.data_version
        )
        self.factors = FactorCache(reader.run_at)
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    def start(self) -> None:
        """Start watching for loaders and new data versions (Litestar ``on_startup``)."""
        self._stop.clear()
        self._watcher = threading.Thread(target=self._watch, name="market-api-watch", daemon=True)
        self._watcher.start()

    def stop(self) -> None:
        """Stop the watch thread and let go of the store (Litestar ``on_shutdown``)."""
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
            self._watcher = None
        self.reader.shutdown()

    def _watch(self) -> None:
        while not self._stop.wait(self.settings.poll_seconds):
            try:
                self.reader.poll()
                self.cache.poll()
                self.factors.follow(self.cache.snapshot()[1])
            except Exception:  # the thread must outlive any one failed tick
                log.exception("market-api watch tick failed")

    async def respond(self, request: Request[Any, Any, Any], question: Question) -> Response[Any]:
        """The answer to ``question`` in the format the client accepts (JSON if the question
        has no other), marked cacheable for the ASGI layer in front."""
        accept = request.headers.get("accept")
        fmt = request_format(accept.encode("latin-1") if accept else None)
        if fmt not in question.formats:
            fmt = "json"
        body = await anyio.to_thread.run_sync(self._answer, question, fmt)
        return Response(
            content=body, media_type=MEDIA_TYPES[fmt], headers=CACHEABLE_HEADERS, status_code=200
        )

    def check_as_of(self, as_of: datetime | None) -> datetime | None:
        """``as_of`` if the reader can travel in time; else its ``HistoryNotKept``."""
        if as_of is not None:
            self.reader.check_as_of(as_of)
        return as_of

    def _answer(self, question: Question, fmt: Format) -> bytes:
        _, version = self.cache.snapshot()
        as_of = question.as_of if isinstance(question, BarsQuestion) else None
        read = Read(version, self.factors if as_of is None else None)
        return self.reader.run_at(version, lambda cur: question.answer(cur, fmt, read), as_of)
