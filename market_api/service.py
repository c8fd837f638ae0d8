"""Between the routes and the data: normalized questions, the cache, the database, encoding.

A question is a frozen dataclass holding a request's parsed, validated parameters (symbol
upper-cased), so it is also the cache key. ``MarketService.respond`` looks it up; on a miss it
asks DuckDB and encodes in one worker thread, stores the finished response and returns it. The
event loop never runs SQL or encodes a large body.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import date
from typing import Any, ClassVar, Protocol, cast

import anyio.to_thread
import duckdb
from litestar import Request, Response

from market_api import queries
from market_api.cache import CachedResponse, Format, RawKey, ResponseCache, build_response
from market_api.db import Database
from market_api.errors import InvalidParameter, UnknownSymbol
from market_api.fastpath import RAW_KEY_SCOPE_KEY, etag_matches, request_format
from market_api.schemas import (
    Bar,
    Health,
    Instrument,
    InstrumentList,
    Interval,
    OhlcvSeries,
    Stats,
    bars_csv,
    json_encoder,
)
from market_api.settings import MAX_LIMIT, Settings
from market_core.symbols import SYMBOL_RULE, InvalidSymbolError, normalize_symbol

log = logging.getLogger(__name__)

_JSON_ONLY: frozenset[Format] = frozenset({"json"})


class Question(Protocol):
    """What a request asks, normalized; hashable, so it is the cache key (with the format)."""

    formats: ClassVar[frozenset[Format]]

    def answer(self, cur: duckdb.DuckDBPyConnection, fmt: Format, version: str | None) -> bytes:
        """The encoded body; raises ``UnknownSymbol`` for a symbol with no bars at all."""
        ...


def parse_symbol(raw: str) -> str:
    """Symbols are case-insensitive on the way in and upper-case everywhere after
    (``market_core.symbols``, the rule the pipeline applies too)."""
    try:
        return normalize_symbol(raw)
    except InvalidSymbolError:
        raise InvalidParameter("symbol", f"symbol must be {SYMBOL_RULE}") from None


def check_range(start: date | None, end: date | None) -> None:
    if start is not None and end is not None and start > end:
        raise InvalidParameter("start", f"start {start} is after end {end}")


@dataclass(frozen=True, slots=True)
class HealthQuestion:
    formats: ClassVar[frozenset[Format]] = _JSON_ONLY

    def answer(self, cur: duckdb.DuckDBPyConnection, fmt: Format, version: str | None) -> bytes:
        newest = queries.newest_bar_date(cur)
        return json_encoder.encode(
            Health(status="ok", data_version=version, newest_bar_date=newest)
        )


@dataclass(frozen=True, slots=True)
class InstrumentsQuestion:
    formats: ClassVar[frozenset[Format]] = _JSON_ONLY

    def answer(self, cur: duckdb.DuckDBPyConnection, fmt: Format, version: str | None) -> bytes:
        rows = queries.instruments(cur)
        return json_encoder.encode(InstrumentList([Instrument(*row) for row in rows]))


@dataclass(frozen=True, slots=True)
class BarsQuestion:
    symbol: str
    interval: Interval
    start: date | None
    end: date | None
    limit: int | None
    formats: ClassVar[frozenset[Format]] = frozenset({"json", "csv"})

    @classmethod
    def parse(
        cls,
        symbol: str,
        interval: Interval,
        start: date | None,
        end: date | None,
        limit: int | None,
    ) -> BarsQuestion:
        check_range(start, end)
        if limit is not None and not 1 <= limit <= MAX_LIMIT:
            raise InvalidParameter("limit", f"limit must be between 1 and {MAX_LIMIT}")
        return cls(parse_symbol(symbol), interval, start, end, limit)

    def answer(self, cur: duckdb.DuckDBPyConnection, fmt: Format, version: str | None) -> bytes:
        rows = queries.bars(cur, self.symbol, self.interval, self.start, self.end, self.limit)
        if not rows and not queries.symbol_exists(cur, self.symbol):
            raise UnknownSymbol(self.symbol)
        if fmt == "csv":
            return bars_csv(rows)
        series = OhlcvSeries(self.symbol, self.interval, [Bar(*row) for row in rows])
        return json_encoder.encode(series)


@dataclass(frozen=True, slots=True)
class StatsQuestion:
    symbol: str
    start: date | None
    end: date | None
    formats: ClassVar[frozenset[Format]] = _JSON_ONLY

    @classmethod
    def parse(cls, symbol: str, start: date | None, end: date | None) -> StatsQuestion:
        check_range(start, end)
        return cls(parse_symbol(symbol), start, end)

    def answer(self, cur: duckdb.DuckDBPyConnection, fmt: Format, version: str | None) -> bytes:
        count, first, last, avg_close, min_low, max_high, total_return = queries.stats(
            cur, self.symbol, self.start, self.end
        )
        if count == 0 and not queries.symbol_exists(cur, self.symbol):
            raise UnknownSymbol(self.symbol)
        stats = Stats(
            symbol=self.symbol,
            start=self.start,
            end=self.end,
            count=count,
            first_date=first,
            last_date=last,
            average_close=avg_close,
            min_low=min_low,
            max_high=max_high,
            total_return=total_return,
        )
        return json_encoder.encode(stats)


class MarketService:
    """Owns the cache, the store's reader and the background watch thread of one app.

    Only the ``market_core.store.StoreReader`` side of ``db`` is used here, so another store's
    reader can take its place."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(
            settings.home,
            wait_seconds=settings.unavailable_wait_seconds,
            retry_seconds=settings.poll_seconds,
            retry_after_seconds=settings.retry_after_seconds,
        )
        # The cache follows the reader's data version: the store's own change signal.
        self.cache = ResponseCache(
            settings.cache_entries, settings.cache_bytes, self.db.data_version
        )
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    def start(self) -> None:
        """Start watching for loaders and new data versions (Litestar ``on_startup``)."""
        self._stop.clear()
        self._watcher = threading.Thread(target=self._watch, name="market-api-watch", daemon=True)
        self._watcher.start()

    def stop(self) -> None:
        """Stop the watch thread and close DuckDB (Litestar ``on_shutdown``)."""
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
            self._watcher = None
        self.db.shutdown()

    def _watch(self) -> None:
        while not self._stop.wait(self.settings.poll_seconds):
            try:
                self.db.poll()
                self.cache.poll()
            except Exception:  # the thread must outlive any one failed tick
                log.exception("market-api watch tick failed")

    async def respond(self, request: Request[Any, Any, Any], question: Question) -> Response[Any]:
        """The cached response to ``question`` (computing it on a miss), or a 304."""
        raw, if_none_match = _raw_request(request)
        fmt: Format = raw[2] if raw[2] in question.formats else "json"
        key = (question, fmt)
        entry = self.cache.get(key)
        if entry is None:
            entry = await anyio.to_thread.run_sync(self._compute, key, question, fmt, raw)
        else:
            self.cache.add_alias(entry, raw)
        return _to_response(entry, if_none_match)

    def _compute(
        self, key: tuple[Question, Format], question: Question, fmt: Format, raw: RawKey
    ) -> CachedResponse:
        generation, version = self.cache.snapshot()
        body = self.db.run(lambda cur: question.answer(cur, fmt, version))
        entry = build_response(key, body, fmt, version)
        self.cache.put(entry, raw, generation)
        return entry


def _raw_request(request: Request[Any, Any, Any]) -> tuple[RawKey, bytes | None]:
    """The raw key and ``If-None-Match`` the fast path saw (recomputed if it did not run)."""
    stashed = cast(dict[str, Any], request.scope).get(RAW_KEY_SCOPE_KEY)
    if stashed is not None:
        return cast(tuple[RawKey, bytes | None], stashed)
    accept = request.headers.get("accept")
    inm = request.headers.get("if-none-match")
    fmt = request_format(accept.encode("latin-1") if accept else None)
    raw = (request.scope["path"], request.scope["query_string"], fmt)
    return raw, inm.encode("latin-1") if inm else None


def _to_response(entry: CachedResponse, if_none_match: bytes | None) -> Response[Any]:
    if etag_matches(if_none_match, entry.etag):
        headers = entry.not_modified_headers
        return Response(content=b"", status_code=304, headers=_str_headers(headers))
    return Response(content=entry.body, status_code=200, headers=_str_headers(entry.headers))


def _str_headers(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    return {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in headers
        if name != b"content-length"
    }
