"""Between the routes and the reader: one app's cache, reader, factor steps and watch thread.

``respond`` answers a question in a worker thread and marks the answer cacheable; storing it,
its ETag and ``If-None-Match`` are the fast path's business (``market_api.http.fastpath``).
Bar answers that stream (``/bars``, and Arrow and Parquet of ``/instruments/{symbol}/ohlcv``)
carry an ETag of their question and are read in batches at one data version (``stream``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import anyio.to_thread
import duckdb
import pyarrow as pa
from litestar import Request, Response
from litestar.response import Stream

from market_api.bars import bulk, by_date, by_symbol
from market_api.bars.bulk import BarBatches, BulkQuestion, Page
from market_api.bars.factors import FactorCache
from market_api.bars.pages import StreamedAnswer, page_writer
from market_api.bars.questions import BarsQuestion, Question, Read
from market_api.bars.schemas import Adjustment
from market_api.bars.summaries import SymbolSummaries
from market_api.bars.tokens import PageToken, TokenSigner, signing_key
from market_api.http.cache import CACHEABLE_HEADERS, ResponseCache, question_etag
from market_api.http.fastpath import etag_matches
from market_api.http.negotiation import MEDIA_TYPES, Format, negotiate
from market_api.readers import Reader
from market_api.readers.errors import (
    HistoryNotKept,
    StoreUnavailable,
    UnknownSymbol,
    VersionGone,
)
from market_api.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

STREAMED: frozenset[Format] = frozenset({"arrow", "parquet"})
"""The formats ``/instruments/{symbol}/ohlcv`` streams in batches (JSON and CSV it answers
whole, as it always has)."""
MISSING_SYMBOLS = "missing-symbols"
NEXT_PAGE_TOKEN = "next-page-token"
"""The header that carries a ``/bars`` page's ``next_page_token`` in every format (absent on
the last page)."""
CHANGED_WHILE_READ = "the data changed while this answer was read; ask again"
_VERSION_TRIES = 3
"""How often an answer without a page token starts again when a load lands before its first
batch (each try is at the newest version)."""


class MarketService:
    """Owns the response cache, the reader and the background watch thread of one app. It
    never asks which reader it holds: the file and the lake answer the same interface."""

    def __init__(self, settings: Settings, reader: Reader) -> None:
        self.settings = settings
        self.reader = reader
        # The cache follows the reader's data version: the store's own change signal.
        self.cache = ResponseCache(
            settings.cache_entries,
            settings.cache_bytes,
            reader.data_version,
            settings.cache_answer_bytes,
        )
        self.factors = FactorCache(reader.run_at)
        self.symbols = bulk.KnownSymbols()
        self.months = bulk.MonthCounts()
        self.dated = by_date.DateOrdered(
            settings.home.root / by_date.FOLDER, min_bars=settings.by_date_min_bars
        )
        self.ordered = by_symbol.SymbolOrdered(
            settings.home.root / by_symbol.FOLDER, min_bars=settings.by_symbol_min_bars
        )
        self.summaries = SymbolSummaries()
        self.signer = TokenSigner(signing_key(settings.token_secret, settings.home))
        self._keeps_history = keeps_history(reader)
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
        self.dated.close()
        self.ordered.close()
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
        fmt = request_format(request)
        if isinstance(question, BarsQuestion) and fmt in STREAMED:
            return await self.respond_series(request, question, fmt)
        if fmt not in question.formats:
            fmt = "json"
        body = await anyio.to_thread.run_sync(self._answer, question, fmt)
        return Response(
            content=body, media_type=bare_type(fmt), headers=CACHEABLE_HEADERS, status_code=200
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

    async def respond_bars(
        self,
        request: Request[Any, Any, Any],
        question: BulkQuestion,
        limit: int,
        page_token: str | None,
    ) -> Response[Any]:
        """A page of ``GET /bars``: the token's data version, or the newest; a 410 when a
        token names a version the store no longer has (the file after a load)."""
        fmt = request_format(request)
        digest = question.digest()
        token = None if page_token is None else self.signer.verify(page_token, digest)
        if token is None:
            version = self.reader.data_version()
        else:
            version = token.version
            self._still_at(version)
        page = Page(limit, None if token is None else token.after)
        tag = f"bars {digest} {limit} {page_token or ''}"

        def start(version: str | None) -> StreamedAnswer:
            return self._bars_answer(question, digest, page, fmt, version)

        return await self.stream(request, fmt, tag, version, start, pinned=token is not None)

    async def respond_series(
        self, request: Request[Any, Any, Any], question: BarsQuestion, fmt: Format
    ) -> Response[Any]:
        """``/instruments/{symbol}/ohlcv`` as Arrow or Parquet: the bars of the JSON answer,
        read in batches (``limit`` keeps the newest, as there)."""
        series = BulkQuestion(
            (question.symbol,),
            question.interval,
            question.start,
            question.end,
            question.adjustment,
            question.as_of,
        )
        tag = f"ohlcv {series.digest()} {question.limit}"

        def start(version: str | None) -> StreamedAnswer:
            return self._series_answer(series, question.limit, fmt, version)

        return await self.stream(request, fmt, tag, self.reader.data_version(), start)

    async def stream(
        self,
        request: Request[Any, Any, Any],
        fmt: Format,
        tag: str,
        version: str | None,
        start: Callable[[str | None], StreamedAnswer],
        pinned: bool = False,
    ) -> Response[Any]:
        """A 304 if the client holds the ETag of (``version``, ``tag``); else the head and first
        batch read in a worker thread (so that a 404 is still an answer), then the rest
        streamed batch by batch. Without a page token (``pinned``), a load that lands before
        the first batch starts it again at the new version; one landing after cuts it."""
        media_type = MEDIA_TYPES[fmt]
        etag = question_etag(version, media_type, tag)
        if_none_match = request.headers.get("if-none-match")
        if if_none_match and etag_matches(if_none_match.encode("latin-1"), etag.encode()):
            return Response(
                content=b"", status_code=304, headers={**CACHEABLE_HEADERS, "etag": etag}
            )
        answer, first, version = await anyio.to_thread.run_sync(self._first, start, version, pinned)
        headers = {**CACHEABLE_HEADERS, "etag": question_etag(version, media_type, tag)}
        if answer.missing:
            headers[MISSING_SYMBOLS] = ",".join(answer.missing)
        if answer.next_page_token is not None:
            headers[NEXT_PAGE_TOKEN] = answer.next_page_token
        return Stream(self._rest(answer, first, pinned), media_type=bare_type(fmt), headers=headers)

    def _first(
        self, start: Callable[[str | None], StreamedAnswer], version: str | None, pinned: bool
    ) -> tuple[StreamedAnswer, bytes, str | None]:
        for _ in range(_VERSION_TRIES):
            try:
                answer = start(version)
                return answer, answer.first(), version
            except VersionGone:
                if pinned:
                    raise
                version = self.reader.data_version()
        raise StoreUnavailable(CHANGED_WHILE_READ, self.settings.retry_after_seconds)

    async def _rest(
        self, answer: StreamedAnswer, first: bytes, pinned: bool
    ) -> AsyncIterator[bytes]:
        yield first
        while (piece := await anyio.to_thread.run_sync(self._next, answer, pinned)) is not None:
            if piece:
                yield piece

    def _next(self, answer: StreamedAnswer, pinned: bool) -> bytes | None:
        try:
            return answer.next()
        except VersionGone:
            if pinned:
                raise
            raise StoreUnavailable(CHANGED_WHILE_READ, self.settings.retry_after_seconds) from None

    def _bars_answer(
        self, question: BulkQuestion, digest: str, page: Page, fmt: Format, version: str | None
    ) -> StreamedAnswer:
        run = self._pinned(version, question.as_of)
        read = self._by_date_runner(question, version, run)
        missing: list[str] = []
        if question.symbols is not None:
            known = run(lambda cur: self.symbols.of(cur, question, version))
            missing = [symbol for symbol in question.symbols if symbol not in known]
            if not known:
                raise UnknownSymbol(",".join(missing))
            question = BulkQuestion(
                tuple(s for s in question.symbols if s in known),
                question.interval,
                question.start,
                question.end,
                question.adjustment,
                question.as_of,
            )
        source = None if by_date.suits(question) else self._by_symbol_source(question, version, run)
        batches = self._batches(run, question, page, version, read, source)
        writer = page_writer(fmt, question.interval, question.adjustment, with_symbol=True)

        def next_token(after: bulk.Key) -> str:
            return self.signer.sign(PageToken(version, digest, after))

        return StreamedAnswer(batches, writer, missing, next_token)

    def _series_answer(
        self, question: BulkQuestion, newest: int | None, fmt: Format, version: str | None
    ) -> StreamedAnswer:
        run = self._pinned(version, question.as_of)
        if not run(lambda cur: self.symbols.of(cur, question, version)):
            raise UnknownSymbol(question.symbols[0] if question.symbols else "")
        if newest is not None:
            first = run(lambda cur: bulk.newest_start(cur, question, newest))
            if first is not None:
                question = question.from_bar(first)
        source = self._by_symbol_source(question, version, run)
        batches = self._batches(run, question, Page(None), version, source=source)
        writer = page_writer(fmt, question.interval, question.adjustment, with_symbol=False)
        return StreamedAnswer(batches, writer, (), None)

    def _batches(
        self,
        run: bulk.Pinned,
        question: BulkQuestion,
        page: Page,
        version: str | None,
        read_bars: bulk.Pinned | None = None,
        source: bulk.Source | None = None,
    ) -> BarBatches:
        """The page's batches, read from ``source`` (the symbol-ordered copy), or by
        ``read_bars`` (the date-ordered copy) or ``run``."""
        steps = None
        if question.adjustment is not Adjustment.RAW:
            read = Read(version, self.factors if question.as_of is None else None)
            found = run(lambda cur: read.steps_of(cur, question.symbols, question.adjustment))
            steps = bulk.steps_table(found, question.adjustment)

        def bounds(after: bulk.Key | None) -> list[tuple[str, int]]:
            return run(lambda cur: self.months.bounds(cur, question, version, after))

        daily = not question.interval.intraday and question.as_of is None
        usable = daily and version == self.reader.data_version()  # not an older snapshot's
        rows = self.settings.batch_rows
        return BarBatches(
            read_bars or run, question, page, rows, steps, bounds if usable else None, source
        )

    def _by_date_runner(
        self, question: BulkQuestion, version: str | None, run: bulk.Pinned
    ) -> bulk.Pinned:
        """``run``, or the date-ordered copy of ``version`` for a question of a few days (one
        is built for the next such question if it is not there yet)."""
        if not by_date.suits(question) or version != self.reader.data_version():
            return run
        copy = self.dated.runner(version, run)
        if copy is None:
            self.dated.want(version, run)
            return run

        def checked(query: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
            self._still_at(version)
            result: T = copy(query)
            return result

        return checked

    def _by_symbol_source(
        self, question: BulkQuestion, version: str | None, run: bulk.Pinned
    ) -> bulk.Source | None:
        """The symbol-ordered copy of ``version`` for a daily, unadjusted question at the
        newest data version (one is built for the next such question if it is not there
        yet); None: ``run`` reads. A store that keeps only its latest data is checked to
        still be at ``version`` before each batch, as ``_pinned`` checks it."""
        if not by_symbol.suits(question) or version != self.reader.data_version():
            return None
        copy = self.ordered.copy_of(version)
        if copy is None:
            self.ordered.want(version, run)
            return None

        def read(span: Sequence[str] | None, after: bulk.Key | None, rows: int) -> pa.Table:
            self._still_at(version)
            return copy.read(question, span, after, rows)

        return read

    def _pinned(self, version: str | None, as_of: datetime | None) -> bulk.Pinned:
        """Runs a query on the data of ``version``; a store that keeps only its latest data
        (the file) is checked to still hold it, inside the query, while the reader holds the
        store open (``VersionGone`` otherwise)."""
        reader = self.reader

        def run(query: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
            def checked(cur: duckdb.DuckDBPyConnection) -> T:
                self._still_at(version)
                return query(cur)

            return reader.run_at(version, checked, as_of)

        return run

    def _still_at(self, version: str | None) -> None:
        """``VersionGone`` when the store keeps only its latest data (the file) and that is no
        longer ``version``: an answer's batches all come from one version, whatever reads them."""
        if not self._keeps_history and self.reader.data_version() != version:
            raise VersionGone(version)


def bare_type(fmt: Format) -> str:
    """``fmt``'s media type without its charset, which Litestar adds to a ``text/`` type (given
    both, it sent ``text/csv; charset=utf-8; charset=utf-8``)."""
    return MEDIA_TYPES[fmt].split(";")[0]


def request_format(request: Request[Any, Any, Any]) -> Format:
    """The format the fast path negotiated (``format`` over ``Accept``)."""
    accept = request.headers.get("accept")
    return negotiate(
        accept.encode("latin-1") if accept else None, request.scope.get("query_string", b"")
    )


def keeps_history(reader: Reader) -> bool:
    """Whether ``reader`` reads older data versions (the lake's snapshots) or only its latest
    (the file), asked through the interface's own question about the past."""
    try:
        reader.check_as_of(datetime.now(UTC))
    except HistoryNotKept:
        return False
    return True
