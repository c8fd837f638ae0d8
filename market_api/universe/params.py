"""The query parameters of ``/listings`` and ``/calendar``, declared for Litestar (validation,
the OpenAPI schema); each may be given at most once (``RULES``)."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from litestar.openapi.spec import Example
from litestar.params import Parameter

from market_api.bars.params import page_limit, page_token
from market_api.http.errors import PAGE_TOKEN
from market_api.http.negotiation import FORMAT_PARAM, FORMATS
from market_api.universe.calendar import FIRST_DAY, LAST_DAY, MAX_DAYS
from market_api.universe.schemas import AssetType, Status

DEFAULT_LISTINGS_LIMIT = 10_000
MAX_LISTINGS_LIMIT = 100_000
"""Most listings in one page: the whole of Alpha Vantage's two lists (~12,000 active, a few
tens of thousands delisted) in a few pages."""
MAX_TEXT = 100
"""Longest ``exchange`` or ``search``."""

LISTINGS_RULES: dict[str, tuple[str, ...] | None] = {
    "status": tuple(Status),
    "exchange": None,
    "asset_type": tuple(AssetType),
    "date": None,
    "search": None,
    "limit": ("a number of listings",),
    PAGE_TOKEN: ("the next_page_token of the previous page",),
    FORMAT_PARAM: FORMATS,
}
"""Every ``/listings`` parameter, given at most once; None: an empty value means absent."""
CALENDAR_RULES: dict[str, tuple[str, ...] | None] = {"start": None, "end": None}

StatusParam = Annotated[
    Status,
    Parameter(
        description="active (default): listed today; delisted; all: both",
        default=Status.ACTIVE,
    ),
]
Exchange = Annotated[
    str | None,
    Parameter(
        description=(
            "Exchanges, comma-separated, case-insensitive, as Alpha Vantage names them "
            "(NYSE, NASDAQ, NYSE ARCA, NYSE MKT, BATS); left out, every exchange"
        ),
        max_length=MAX_TEXT,
        examples=[Example(value="NYSE,NASDAQ")],
    ),
]
AssetTypeParam = Annotated[AssetType | None, Parameter(description="Stock or ETF; left out, both")]
ListedOn = Annotated[
    date | None,
    Parameter(
        description=(
            "Listed that day (YYYY-MM-DD): ipo_date on or before it and no delisting on or "
            "before it. With status=all, the universe as it stood that day"
        ),
    ),
]
Search = Annotated[
    str | None,
    Parameter(
        description="A prefix of the symbol or of the name, case-insensitive",
        max_length=MAX_TEXT,
        examples=[Example(value="APP")],
    ),
]
ListingsLimit = Annotated[int, page_limit("Listings", MAX_LISTINGS_LIMIT, DEFAULT_LISTINGS_LIMIT)]
ListingsToken = Annotated[str | None, page_token("status, exchange, asset_type, date and search")]
CalendarStart = Annotated[
    date | None,
    Parameter(
        description=(
            f"First day, inclusive (YYYY-MM-DD), {FIRST_DAY} to {LAST_DAY}; default today "
            "(New York), or a year before end"
        ),
    ),
]
CalendarEnd = Annotated[
    date | None,
    Parameter(
        description=(
            f"Last day, inclusive, {FIRST_DAY} to {LAST_DAY}, not before start, at most "
            f"{MAX_DAYS} days after it; default a year after start"
        ),
    ),
]
