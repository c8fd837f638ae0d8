"""Between the routes and the data: normalized questions, the database, encoding.

A question is a frozen dataclass holding a request's parsed, validated parameters (symbol
upper-cased). ``MarketService.respond`` asks DuckDB and encodes in one worker thread, so the
event loop never runs SQL or encodes a large body, and marks the answer cacheable; storing it,
its ETag and ``If-None-Match`` are the ASGI layer's business (``fastpath.py``).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, ClassVar, Protocol, TypeVar, cast
from urllib.parse import parse_qsl

import anyio.to_thread
import duckdb
from litestar import Request, Response

from market_api import queries
from market_api.cache import CACHE_CONTROL, MEDIA_TYPES, VARY, Format, ResponseCache
from market_api.db import Database
from market_api.errors import InvalidParameter, UnknownSymbol
from market_api.factors import FactorCache
from market_api.fastpath import request_format
from market_api.lake_db import AS_OF, LakeDatabase
from market_api.schemas import (
    Adjustment,
    Bar,
    CorporateActions,
    Dividend,
    Health,
    Instrument,
    InstrumentList,
    Interval,
    OhlcvSeries,
    Split,
    Stats,
    bars_csv,
    intraday_bars_csv,
    json_encoder,
)
from market_api.settings import MAX_LIMIT, Settings
from market_core.exchange import EXCHANGE_TZ
from market_core.lake import LakeSettings
from market_core.schema import DIVIDEND, SPLIT
from market_core.symbols import SYMBOL_RULE, InvalidSymbolError, normalize_symbol

log = logging.getLogger(__name__)

_JSON_ONLY: frozenset[Format] = frozenset({"json"})

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Read:
    """What an answer may use besides the cursor: the data version it is computed under (the
    cache's snapshot) and the factor steps of that version. An answer as of an older snapshot
    (``as_of``) has no cached steps (``factors`` None): it computes its symbol's on its cursor."""

    version: str | None
    factors: FactorCache | None

    def steps(
        self, cur: duckdb.DuckDBPyConnection, symbol: str, adjustment: Adjustment
    ) -> queries.FactorSteps:
        if adjustment is Adjustment.RAW:
            return queries.NO_STEPS
        if self.factors is None:
            return queries.factor_steps(cur, symbol)
        return self.factors.get(cur, symbol, self.version)


class Question(Protocol):
    """What a request asks, normalized; its ``answer`` is the body in one of ``formats``."""

    formats: ClassVar[frozenset[Format]]

    def answer(self, cur: duckdb.DuckDBPyConnection, fmt: Format, read: Read) -> bytes:
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


_MOMENT = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})"
    r"(?:[T ](?P<time>\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?)"
    r"(?P<offset>Z|z|[+\- ]\d{2}:\d{2})?)?"
)
MOMENT_RULE = (
    "an ISO date (YYYY-MM-DD) or date-time (YYYY-MM-DDTHH:MM[:SS[.ffffff]], exchange-local "
    "America/New_York, or with Z or an offset such as -05:00)"
)


def parse_moment(name: str, raw: str | None) -> date | None:
    """A ``start`` or ``end`` as a ``date``, or a naive exchange-local ``datetime`` (a
    ``datetime`` is a ``date``): one with an offset is converted to New York time.

    Parsed here, not by Litestar: a ``date | datetime`` parameter is a union msgspec refuses
    (a 500 in Litestar 2.25), and ``fromisoformat`` alone would also take ``20240102``, which
    the API has always refused. An empty value counts as absent, as Litestar had it. A ``+``
    left unencoded in a query string arrives as a space; it is read as the ``+`` it was."""
    if not raw:
        return None
    match = _MOMENT.fullmatch(raw)
    try:
        if match is None:
            raise ValueError(raw)
        day = date.fromisoformat(match["date"])
        if match["time"] is None:
            return day
        offset = match["offset"] or ""
        offset = "+00:00" if offset in ("Z", "z") else offset.replace(" ", "+")
        moment = datetime.fromisoformat(f"{match['date']}T{match['time']}{offset}")
        if moment.tzinfo is None:
            return moment
        return moment.astimezone(EXCHANGE_TZ).replace(tzinfo=None)
    except (ValueError, OverflowError):
        raise InvalidParameter(name, f"{name} {raw!r} is not {MOMENT_RULE}") from None


def check_once(request: Request[Any, Any, Any], name: str, allowed: Iterable[str]) -> None:
    """Refuse ``name`` given twice or given empty, both of which Litestar lets pass (the last
    copy wins; an empty value counts as absent, so the default would answer): ``raw`` and
    ``all`` asked together, or an empty value, have no right answer."""
    query = request.scope.get("query_string", b"").decode("latin-1")
    values = [v for k, v in parse_qsl(query, keep_blank_values=True) if k == name]
    if len(values) > 1:
        raise InvalidParameter(name, f"{name} given more than once; give it at most once")
    if values and not values[0]:
        raise InvalidParameter(name, f"{name} is empty; give one of {', '.join(allowed)}")


@dataclass(frozen=True, slots=True)
class HealthQuestion:
    formats: ClassVar[frozenset[Format]] = _JSON_ONLY

    def answer(self, cur: duckdb.DuckDBPyConnection, fmt: Format, read: Read) -> bytes:
        newest = queries.newest_bar_date(cur)
        return json_encoder.encode(
            Health(status="ok", data_version=read.version, newest_bar_date=newest)
        )


@dataclass(frozen=True, slots=True)
class InstrumentsQuestion:
    formats: ClassVar[frozenset[Format]] = _JSON_ONLY

    def answer(self, cur: duckdb.DuckDBPyConnection, fmt: Format, read: Read) -> bytes:
        rows = queries.instruments(cur)
        return json_encoder.encode(InstrumentList([Instrument(*row) for row in rows]))


@dataclass(frozen=True, slots=True)
class BarsQuestion:
    symbol: str
    interval: Interval
    start: date | None
    end: date | None
    """Dates for daily, weekly and monthly bars; for intraday ones a date or an exact naive
    exchange-local ``datetime`` (``parse``, ``queries.intraday_range``)."""
    limit: int | None
    adjustment: Adjustment = Adjustment.RAW
    as_of: datetime | None = None
    """Answer as the data stood then (lake mode only; ``MarketService.check_as_of``)."""
    formats: ClassVar[frozenset[Format]] = frozenset({"json", "csv"})

    @classmethod
    def parse(
        cls,
        symbol: str,
        interval: Interval,
        start: date | None,
        end: date | None,
        limit: int | None,
        adjustment: Adjustment = Adjustment.RAW,
        as_of: datetime | None = None,
    ) -> BarsQuestion:
        """A ``datetime`` bound of a daily, weekly or monthly question counts as its date:
        those bars are dated by their day, so ``end=2024-01-02T10:00`` still includes the bar
        of January 2 (and the cache key, not the question, differs from ``end=2024-01-02``)."""
        if interval.intraday:
            low, high = queries.intraday_range(start, end)
            if low >= high and high != datetime.max:  # the end of time is inclusive too
                raise InvalidParameter("start", f"start {start} is after end {end}")
        else:
            start, end = _day(start), _day(end)
            check_range(start, end)
        if limit is not None and not 1 <= limit <= MAX_LIMIT:
            raise InvalidParameter("limit", f"limit must be between 1 and {MAX_LIMIT}")
        return cls(parse_symbol(symbol), interval, start, end, limit, adjustment, as_of)

    def answer(self, cur: duckdb.DuckDBPyConnection, fmt: Format, read: Read) -> bytes:
        if self.interval.intraday:
            return self._intraday(cur, fmt, read)
        steps = read.steps(cur, self.symbol, self.adjustment)
        rows = queries.bars(
            cur,
            self.symbol,
            self.interval,
            self.start,
            self.end,
            self.limit,
            self.adjustment,
            steps,
        )
        if not rows and not queries.symbol_exists(cur, self.symbol):
            raise UnknownSymbol(self.symbol)
        if fmt == "csv":
            return bars_csv(rows)
        bars = [Bar(*row) for row in rows]
        return json_encoder.encode(OhlcvSeries(self.symbol, self.interval, self.adjustment, bars))

    def _intraday(self, cur: duckdb.DuckDBPyConnection, fmt: Format, read: Read) -> bytes:
        """A known symbol with no intraday bars (none stored yet, or not at this interval)
        answers an empty series, as a daily range without bars does."""
        low, high = queries.intraday_range(self.start, self.end)
        steps = read.steps(cur, self.symbol, self.adjustment)
        rows = queries.intraday_bars(
            cur, self.symbol, self.interval, low, high, self.limit, self.adjustment, steps
        )
        if not rows and not queries.symbol_exists_intraday(cur, self.symbol):
            raise UnknownSymbol(self.symbol)
        if fmt == "csv":
            return intraday_bars_csv(rows)
        bars = [Bar(*row) for row in rows]
        return json_encoder.encode(OhlcvSeries(self.symbol, self.interval, self.adjustment, bars))


def _day(moment: date | None) -> date | None:
    return moment.date() if isinstance(moment, datetime) else moment


@dataclass(frozen=True, slots=True)
class StatsQuestion:
    symbol: str
    start: date | None
    end: date | None
    adjustment: Adjustment = Adjustment.RAW
    formats: ClassVar[frozenset[Format]] = _JSON_ONLY

    @classmethod
    def parse(
        cls,
        symbol: str,
        start: date | None,
        end: date | None,
        adjustment: Adjustment = Adjustment.RAW,
    ) -> StatsQuestion:
        check_range(start, end)
        return cls(parse_symbol(symbol), start, end, adjustment)

    def answer(self, cur: duckdb.DuckDBPyConnection, fmt: Format, read: Read) -> bytes:
        steps = read.steps(cur, self.symbol, self.adjustment)
        count, first, last, avg_close, min_low, max_high, total_return = queries.stats(
            cur, self.symbol, self.start, self.end, self.adjustment, steps
        )
        if count == 0 and not queries.symbol_exists(cur, self.symbol):
            raise UnknownSymbol(self.symbol)
        stats = Stats(
            symbol=self.symbol,
            start=self.start,
            end=self.end,
            adjustment=self.adjustment,
            count=count,
            first_date=first,
            last_date=last,
            average_close=avg_close,
            min_low=min_low,
            max_high=max_high,
            total_return=total_return,
        )
        return json_encoder.encode(stats)


@dataclass(frozen=True, slots=True)
class ActionsQuestion:
    symbol: str
    start: date | None
    end: date | None
    formats: ClassVar[frozenset[Format]] = _JSON_ONLY

    @classmethod
    def parse(cls, symbol: str, start: date | None, end: date | None) -> ActionsQuestion:
        check_range(start, end)
        return cls(parse_symbol(symbol), start, end)

    def answer(self, cur: duckdb.DuckDBPyConnection, fmt: Format, read: Read) -> bytes:
        rows = queries.actions(cur, self.symbol, self.start, self.end)
        if not rows and not queries.symbol_known(cur, self.symbol):
            raise UnknownSymbol(self.symbol, "bars and no corporate actions")
        splits: list[Split] = []
        dividends: list[Dividend] = []
        for kind, ex_date, factor, amount, declared, recorded, paid in rows:
            if kind == SPLIT:
                splits.append(Split(ex_date, cast(float, factor)))
            elif kind == DIVIDEND:
                dividends.append(Dividend(ex_date, cast(float, amount), declared, recorded, paid))
        return json_encoder.encode(CorporateActions(self.symbol, splits, dividends))


def open_reader(settings: Settings) -> Database | LakeDatabase:
    """The store's reader: the shared lake when ``MARKET_POSTGRES_URL`` is set, else the data
    home's DuckDB file."""
    lake = LakeSettings.from_env()
    if lake is None:
        return Database(
            settings.home,
            wait_seconds=settings.unavailable_wait_seconds,
            retry_seconds=settings.poll_seconds,
            retry_after_seconds=settings.retry_after_seconds,
        )
    return LakeDatabase(
        lake,
        wait_seconds=settings.unavailable_wait_seconds,
        retry_seconds=settings.poll_seconds,
        retry_after_seconds=settings.retry_after_seconds,
    )


class MarketService:
    """Owns the cache, the store's reader and the background watch thread of one app.

    Only the ``market_core.store.StoreReader`` side of ``db`` is used here, so another store's
    reader can take its place; a lake's reader also pins each answer to the snapshot of the
    data version it is filed under, and travels in time."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = open_reader(settings)
        self._lake = self.db if isinstance(self.db, LakeDatabase) else None
        # The cache follows the reader's data version: the store's own change signal.
        self.cache = ResponseCache(
            settings.cache_entries, settings.cache_bytes, self.db.data_version
        )
        self.factors = FactorCache(self._run)
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
            content=body, media_type=MEDIA_TYPES[fmt], headers=_CACHEABLE, status_code=200
        )

    def check_as_of(self, as_of: datetime | None) -> datetime | None:
        """``as_of`` if the store keeps its history (the lake's snapshots); the DuckDB file
        keeps none, so there it is refused."""
        if as_of is not None and self._lake is None:
            raise InvalidParameter(
                AS_OF,
                "as_of needs the shared lake, which keeps every snapshot (set "
                "MARKET_POSTGRES_URL and MARKET_SHARED_HOME); this API serves one DuckDB file "
                "with no history: leave as_of out",
            )
        return as_of

    def _answer(self, question: Question, fmt: Format) -> bytes:
        _, version = self.cache.snapshot()
        as_of = question.as_of if isinstance(question, BarsQuestion) else None
        read = Read(version, self.factors if as_of is None else None)
        return self._run(version, lambda cur: question.answer(cur, fmt, read), as_of)

    def _run(
        self,
        version: str | None,
        query: Callable[[duckdb.DuckDBPyConnection], T],
        as_of: datetime | None = None,
    ) -> T:
        """``query`` on the snapshot of ``version`` (a lake keeps many; the file only its
        latest), or of ``as_of``."""
        if self._lake is not None:
            return self._lake.run_at(version, query, as_of)
        return self.db.run(query)


_CACHEABLE = {"cache-control": CACHE_CONTROL, "vary": VARY}
