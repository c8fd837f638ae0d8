"""The data endpoints as Litestar controllers: parameters in, a question to the service.

Parameter types and bounds are declared (``params``) so that Litestar validates them and the
OpenAPI schema states them; everything else happens in ``MarketService``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from litestar import Controller, Request, Response, get
from litestar.datastructures import ResponseHeader

from market_api.bars.bulk import BulkQuestion
from market_api.bars.params import (
    AS_OF_RULE,
    DEFAULT_PAGE_LIMIT,
    AdjustmentParam,
    AsOf,
    End,
    EndMoment,
    FormatParam,
    IntervalParam,
    Limit,
    PageLimit,
    PageTokenParam,
    Start,
    StartMoment,
    Symbol,
    Symbols,
    check_given_once,
    check_once,
    parse_moment,
    parse_symbols,
    query_values,
)
from market_api.bars.questions import (
    ActionsQuestion,
    BarsQuestion,
    HealthQuestion,
    InstrumentsQuestion,
    StatsQuestion,
)
from market_api.bars.schemas import (
    CSV_COLUMNS,
    LONG_COLUMNS,
    Adjustment,
    BarsPage,
    CorporateActions,
    Health,
    InstrumentList,
    Interval,
    OhlcvSeries,
)
from market_api.bars.schemas import Stats as StatsBody
from market_api.bars.service import MarketService
from market_api.http.errors import PAGE_TOKEN
from market_api.http.negotiation import FORMAT_PARAM, FORMATS
from market_api.http.openapi import (
    CACHE_HEADERS,
    NEXT_PAGE_HEADER,
    NOT_MODIFIED,
    STALE_PAGE_TOKEN,
    UNAVAILABLE,
    AlternativesOperation,
    error,
)

_SYMBOL_ERRORS = {
    304: NOT_MODIFIED,
    400: error(
        "A parameter is malformed or out of range, or start is after end; `parameter` names it"
    ),
    404: error("No bars are stored for this symbol"),
    503: UNAVAILABLE,
}
_ACTIONS_ERRORS = {
    **_SYMBOL_ERRORS,
    404: error("Neither bars nor corporate actions are stored for this symbol"),
}


@dataclass
class BarsOperation(AlternativesOperation):
    """``/instruments/{symbol}/ohlcv``: one bar per line."""

    columns: ClassVar[tuple[str, ...]] = CSV_COLUMNS
    typed: ClassVar[str] = (
        "the timestamp a date (daily, weekly, monthly) or a timestamp[us, America/New_York] "
        "(intraday), prices float64, volume int64"
    )
    csv_row: ClassVar[str] = "one bar per line"
    example_row: ClassVar[str] = "2024-01-02,187.15,188.44,183.89,185.64,82488700"


@dataclass
class LongBarsOperation(BarsOperation):
    """``/bars``: the same alternatives in the long form, ``symbol`` first."""

    columns: ClassVar[tuple[str, ...]] = LONG_COLUMNS
    example_row: ClassVar[str] = "AAPL,2024-01-02,187.15,188.44,183.89,185.64,82488700"


class HealthController(Controller):
    path = "/health"
    tags = ["health"]

    @get(
        "/",
        summary="Liveness, data version and newest bar",
        response_headers=CACHE_HEADERS,
        responses={304: NOT_MODIFIED, 503: UNAVAILABLE},
    )
    async def health(
        self, request: Request[Any, Any, Any], service: MarketService
    ) -> Response[Health]:
        """200 also before the first load (``data_version`` and ``newest_bar_date`` null)."""
        return await service.respond(request, HealthQuestion())


class InstrumentController(Controller):
    path = "/instruments"
    tags = ["instruments"]

    @get(
        "/",
        summary="Every symbol with bars: its span, bar count, listing and missing sessions",
        description=(
            "name, exchange, asset_type, status and delisting_date come from the listing the "
            "symbol's bars belong to (null without one; a reused ticker: the latest listed on "
            "or before the first bar, else the earliest). missing_sessions counts the NYSE "
            "sessions without a bar from the first bar (or the ipo_date, if later) to the last "
            "bar (or the delisting_date, if earlier)."
        ),
        response_headers=CACHE_HEADERS,
        responses={304: NOT_MODIFIED, 503: UNAVAILABLE},
    )
    async def list_instruments(
        self, request: Request[Any, Any, Any], service: MarketService
    ) -> Response[InstrumentList]:
        return await service.respond(request, InstrumentsQuestion(service.summaries))

    @get(
        "/{symbol:str}/ohlcv",
        summary="Daily, weekly, monthly or intraday bars of one symbol, ascending",
        description=(
            "Weekly (ISO week) and monthly (calendar month) bars are aggregated from the daily "
            "bars inside [start, end]: first open, max high, min low, last close, summed "
            "volume, dated by their first trading day. Intraday bars (1min to 60min) are the "
            "stored ones of that interval; each timestamp is the bar's start, exchange-local "
            "with its UTC offset (2024-01-02T09:30:00-05:00), and the adjustment of a bar is "
            "its day's. `limit` keeps the newest N bars. "
            "With `adjustment`, the daily bars are adjusted first and the weekly and monthly "
            "ones built from them. With `as_of` (shared lake only), bars and corporate actions "
            "are read as they stood then. Send `Accept: text/csv` for CSV with the same columns, "
            "`application/vnd.apache.arrow.stream` or `application/vnd.apache.parquet` for Arrow "
            "or Parquet (typed columns, streamed), or name the format with `format`."
        ),
        response_headers=CACHE_HEADERS,
        responses=_SYMBOL_ERRORS,
        operation_class=BarsOperation,
    )
    async def ohlcv(
        self,
        request: Request[Any, Any, Any],
        service: MarketService,
        symbol: Symbol,
        start: StartMoment = None,
        end: EndMoment = None,
        interval: IntervalParam = Interval.DAY,
        limit: Limit = None,
        adjustment: AdjustmentParam = Adjustment.RAW,
        as_of: AsOf = None,
        format: FormatParam = None,
    ) -> Response[OhlcvSeries]:
        check_given_once(
            query_values(request),
            {"adjustment": tuple(Adjustment), "as_of": AS_OF_RULE, FORMAT_PARAM: FORMATS},
        )
        first, last = parse_moment("start", start), parse_moment("end", end)
        question = BarsQuestion.parse(
            symbol, interval, first, last, limit, adjustment, service.check_as_of(as_of)
        )
        return await service.respond(request, question)

    @get(
        "/{symbol:str}/stats",
        summary="Summary statistics of one symbol's daily bars in [start, end]",
        response_headers=CACHE_HEADERS,
        responses=_SYMBOL_ERRORS,
    )
    async def stats(
        self,
        request: Request[Any, Any, Any],
        service: MarketService,
        symbol: Symbol,
        start: Start = None,
        end: End = None,
        adjustment: AdjustmentParam = Adjustment.RAW,
    ) -> Response[StatsBody]:
        check_once(request, "adjustment", Adjustment)
        question = StatsQuestion.parse(symbol, start, end, adjustment)
        return await service.respond(request, question)

    @get(
        "/{symbol:str}/corporate-actions",
        summary="Splits and dividends of one symbol with ex-date in [start, end], ascending",
        description=(
            "The events the adjustments use, as stored: split factors (new shares per old "
            "share, below 1 for a reverse split) and dividend amounts as Alpha Vantage reports "
            "them; dates nobody recorded are null."
        ),
        response_headers=CACHE_HEADERS,
        responses=_ACTIONS_ERRORS,
    )
    async def corporate_actions(
        self,
        request: Request[Any, Any, Any],
        service: MarketService,
        symbol: Symbol,
        start: Start = None,
        end: End = None,
    ) -> Response[CorporateActions]:
        return await service.respond(request, ActionsQuestion.parse(symbol, start, end))


_BARS_ERRORS = {
    304: NOT_MODIFIED,
    400: error(
        "A parameter is malformed, out of range or given twice, start is after end, over "
        "1000 symbols, or page_token was altered or belongs to another query; `parameter` "
        "names it"
    ),
    404: error("None of the symbols has bars stored; `detail` names them"),
    410: STALE_PAGE_TOKEN,
    503: UNAVAILABLE,
}
_MISSING_HEADER = ResponseHeader(
    name="Missing-Symbols",
    documentation_only=True,
    required=False,
    description="The asked symbols with no bars stored, comma-separated (when there are any)",
)
_BARS_RULES: dict[str, tuple[str, ...] | None] = {
    "symbols": ("comma-separated symbols, or leave it out for every symbol",),
    "start": None,
    "end": None,
    "interval": tuple(Interval),
    "adjustment": tuple(Adjustment),
    "as_of": AS_OF_RULE,
    "limit": ("a number of bars",),
    PAGE_TOKEN: ("the next_page_token of the previous page",),
    FORMAT_PARAM: FORMATS,
}


class BarsController(Controller):
    path = "/bars"
    tags = ["bars"]

    @get(
        "/",
        summary="Bars of many symbols, by symbol then timestamp, in pages",
        description=(
            "Up to 1000 symbols (left out: every symbol with bars), with the parameters of "
            "/instruments/{symbol}/ohlcv; each bar has that answer's keys. The whole market on "
            "one day: `?start=D&end=D`. A page holds `limit` bars; `next_page_token` continues "
            "it (also the Next-Page-Token header, in every format) and reads the same data as "
            "the first page (the lake's snapshot; in the single-file mode a load in between is "
            "a 410). Unknown symbols are listed in "
            "`missing_symbols` and the Missing-Symbols header. CSV, Arrow and Parquet are the "
            "long form, one row a bar: symbol,timestamp,open,high,low,close,volume."
        ),
        response_headers=[*CACHE_HEADERS, NEXT_PAGE_HEADER, _MISSING_HEADER],
        responses=_BARS_ERRORS,
        operation_class=LongBarsOperation,
    )
    async def bars(
        self,
        request: Request[Any, Any, Any],
        service: MarketService,
        symbols: Symbols = None,
        start: StartMoment = None,
        end: EndMoment = None,
        interval: IntervalParam = Interval.DAY,
        adjustment: AdjustmentParam = Adjustment.RAW,
        as_of: AsOf = None,
        limit: PageLimit = DEFAULT_PAGE_LIMIT,
        page_token: PageTokenParam = None,
        format: FormatParam = None,
    ) -> Response[BarsPage]:
        check_given_once(query_values(request), _BARS_RULES)
        question = BulkQuestion.parse(
            parse_symbols(symbols),
            interval,
            parse_moment("start", start),
            parse_moment("end", end),
            adjustment,
            service.check_as_of(as_of),
        )
        return await service.respond_bars(request, question, limit, page_token)
