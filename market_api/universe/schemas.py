"""The wire contract of ``/listings`` and ``/calendar``: msgspec Structs, the CSV columns and
the Arrow schema of a listing."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

import msgspec
import pyarrow as pa

from market_core.schema import LISTING_ASSET_TYPES, LISTING_STATUSES, LISTINGS_COLUMNS


class Status(StrEnum):
    """``status`` of ``/listings``: the stored statuses, or both."""

    ACTIVE = "active"
    DELISTED = "delisted"
    ALL = "all"


class AssetType(StrEnum):
    """``asset_type`` as Alpha Vantage spells it and ``listings`` stores it."""

    STOCK = "Stock"
    ETF = "ETF"


if {s.value for s in Status} != {*LISTING_STATUSES, "all"} or tuple(AssetType) != tuple(
    LISTING_ASSET_TYPES
):  # pragma: no cover
    raise AssertionError("universe.schemas lost step with market_core.schema's listings values")


class Listing(msgspec.Struct, gc=False):
    """A row of ``listings``, and whether bars are stored for it."""

    symbol: str
    name: str | None
    exchange: str | None
    asset_type: str | None
    ipo_date: date | None
    delisting_date: date | None
    status: str
    first_seen: date
    last_seen: date
    has_bars: bool
    """Bars are stored for the symbol within the listing's life: the first bar on or before
    its delisting_date and the last on or after its ipo_date."""


class ListingsPage(msgspec.Struct, gc=False):
    listings: list[Listing]
    """By symbol, then ipo_date (a reused ticker: the earlier company first)."""
    next_page_token: str | None
    """Pass it as ``page_token`` for the next page; null on the last one."""


class Session(msgspec.Struct, gc=False):
    date: date
    open: datetime
    """New York time with its offset: ``2024-11-29T09:30:00-05:00``."""
    close: datetime
    """16:00, or 13:00 on an early close (14:00 before 1993)."""


class Calendar(msgspec.Struct, gc=False):
    sessions: list[Session]
    """Every NYSE session from start to end, ascending."""


LISTING_COLUMNS: tuple[str, ...] = (*LISTINGS_COLUMNS, "has_bars")
"""A listing's fields in order: the CSV header, the Arrow and Parquet columns."""
if tuple(Listing.__struct_fields__) != LISTING_COLUMNS:  # pragma: no cover
    raise AssertionError("universe.schemas.Listing lost step with market_core.schema's columns")

_DATES = frozenset({"ipo_date", "delisting_date", "first_seen", "last_seen"})
LISTING_ARROW_SCHEMA = pa.schema(
    [
        pa.field(
            name,
            pa.bool_() if name == "has_bars" else pa.date32() if name in _DATES else pa.string(),
        )
        for name in LISTING_COLUMNS
    ]
)
"""Typed columns of the Arrow and Parquet answers: strings, dates, ``has_bars`` a boolean."""

json_encoder = msgspec.json.Encoder()
