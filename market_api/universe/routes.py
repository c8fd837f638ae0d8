"""``/listings`` and ``/calendar`` as Litestar controllers: parameters in, a question answered
in a worker thread, the answer marked cacheable for the fast path (ETag, 304)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, ClassVar

import anyio.to_thread
from litestar import Controller, Request, Response, get

from market_api.bars.params import FormatParam, check_given_once, query_values
from market_api.bars.service import MarketService, bare_type, request_format
from market_api.http.cache import CACHEABLE_HEADERS
from market_api.http.openapi import (
    CACHE_HEADERS,
    NEXT_PAGE_HEADER,
    NOT_MODIFIED,
    STALE_PAGE_TOKEN,
    UNAVAILABLE,
    AlternativesOperation,
    error,
)
from market_api.universe.calendar import CalendarQuestion
from market_api.universe.listings import NEXT_PAGE_TOKEN, ListingsQuestion, read_listings
from market_api.universe.params import (
    CALENDAR_RULES,
    DEFAULT_LISTINGS_LIMIT,
    LISTINGS_RULES,
    AssetTypeParam,
    CalendarEnd,
    CalendarStart,
    Exchange,
    ListedOn,
    ListingsLimit,
    ListingsToken,
    Search,
    StatusParam,
)
from market_api.universe.schemas import LISTING_COLUMNS, Calendar, ListingsPage, Status
from market_core.exchange import EXCHANGE_TZ

_LISTINGS_ERRORS = {
    304: NOT_MODIFIED,
    400: error(
        "A parameter is malformed, unknown, out of range or given twice, or page_token was "
        "altered or belongs to other filters; `parameter` names it"
    ),
    410: STALE_PAGE_TOKEN,
    503: UNAVAILABLE,
}
_CALENDAR_ERRORS = {
    304: NOT_MODIFIED,
    400: error(
        "start or end is not a date, outside the calendar's days, reversed, or the range is "
        "too long; `parameter` names it"
    ),
}


@dataclass
class ListingsOperation(AlternativesOperation):
    """``/listings``: a listing a line."""

    columns: ClassVar[tuple[str, ...]] = LISTING_COLUMNS
    typed: ClassVar[str] = "dates as date32, has_bars a boolean, the others strings"
    csv_row: ClassVar[str] = "a listing a line"
    example_row: ClassVar[str] = (
        "AAPL,Apple Inc,NASDAQ,Stock,1980-12-12,,active,2024-11-01,2024-11-29,true"
    )


class ListingsController(Controller):
    path = "/listings"
    tags = ["universe"]

    @get(
        "/",
        summary="Listings from Alpha Vantage's LISTING_STATUS, active and delisted, in pages",
        description=(
            "One entry per listing: a ticker reused by a later company is a second entry with "
            "its own ipo_date. Filters combine: status, exchange, asset_type, date (listed "
            "that day; with status=all the survivorship-free universe of that day) and search "
            "(a prefix of the symbol or the name). By symbol, then ipo_date; a page holds "
            "`limit` listings and `next_page_token` (also the Next-Page-Token header) "
            "continues it at the first page's data. has_bars: bars are stored for the symbol "
            "within the listing's life. CSV, Arrow and Parquet have the same columns."
        ),
        response_headers=[*CACHE_HEADERS, NEXT_PAGE_HEADER],
        responses=_LISTINGS_ERRORS,
        operation_class=ListingsOperation,
    )
    async def listings(
        self,
        request: Request[Any, Any, Any],
        service: MarketService,
        status: StatusParam = Status.ACTIVE,
        exchange: Exchange = None,
        asset_type: AssetTypeParam = None,
        date: ListedOn = None,
        search: Search = None,
        limit: ListingsLimit = DEFAULT_LISTINGS_LIMIT,
        page_token: ListingsToken = None,
        format: FormatParam = None,
    ) -> Response[ListingsPage]:
        check_given_once(query_values(request), LISTINGS_RULES)
        question = ListingsQuestion.parse(status, exchange, asset_type, date, search)
        token = None if page_token is None else service.signer.verify(page_token, question.digest())
        fmt = request_format(request)
        answer = await anyio.to_thread.run_sync(
            partial(read_listings, service, question, limit, token, fmt)
        )
        headers = dict(CACHEABLE_HEADERS)
        if answer.next_page_token is not None:
            headers[NEXT_PAGE_TOKEN] = answer.next_page_token
        return _encoded(answer.body, bare_type(fmt), headers)


class CalendarController(Controller):
    path = "/calendar"
    tags = ["universe"]

    @get(
        "/",
        summary="NYSE sessions from start to end, with their open and close",
        description=(
            "Each session's open and close are New York date-times with their UTC offset "
            "(2024-11-29T09:30:00-05:00); an early close shows as such (13:00). Holidays and "
            "weekends are absent. The calendar is the one the pipeline checks the bars "
            "against, equal to exchange_calendars' XNYS from 2000 to the end of next year."
        ),
        response_headers=CACHE_HEADERS,
        responses=_CALENDAR_ERRORS,
    )
    async def calendar(
        self,
        request: Request[Any, Any, Any],
        start: CalendarStart = None,
        end: CalendarEnd = None,
    ) -> Response[Calendar]:
        check_given_once(query_values(request), CALENDAR_RULES)
        today = datetime.now(EXCHANGE_TZ).date()
        question = CalendarQuestion.parse(start, end, today)
        body = await anyio.to_thread.run_sync(question.answer)
        return _encoded(body, "application/json", CACHEABLE_HEADERS)


def _encoded(body: bytes, media_type: str, headers: dict[str, str]) -> Response[Any]:
    """A 200 of an already encoded body; its cache headers let the fast path store it."""
    return Response(content=body, media_type=media_type, headers=headers)
