"""The wire contract: msgspec Structs for every JSON body, and the CSV layout of a bar series.

Paths, field names and field order are fixed; clients and the README rely on them. Dates go out
as ``YYYY-MM-DD`` (msgspec's encoding of ``datetime.date``), symbols upper-case.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from enum import StrEnum
from typing import Literal, cast

import msgspec
import pyarrow as pa

from market_core.exchange import EXCHANGE_TZ
from market_core.schema import INTRADAY_INTERVALS


class Interval(StrEnum):
    """Bar length: daily bars as stored, ISO weeks / calendar months aggregated in DuckDB from
    them, or intraday bars as stored in ``ohlcv_intraday`` (``market_core.schema``), each
    interval its own series (nothing is aggregated across intervals)."""

    DAY = "1d"
    WEEK = "1w"
    MONTH = "1mo"
    MIN1 = "1min"
    MIN5 = "5min"
    MIN15 = "15min"
    MIN30 = "30min"
    MIN60 = "60min"

    @property
    def intraday(self) -> bool:
        return self.value in INTRADAY_INTERVALS


if {i.value for i in Interval if i.intraday} != set(INTRADAY_INTERVALS):  # pragma: no cover
    raise AssertionError("schemas.Interval lost step with market_core.schema.INTRADAY_INTERVALS")


class Adjustment(StrEnum):
    """How prices are adjusted for corporate actions at read time (the stored bars never are).

    ``split`` divides prices by S(t) and multiplies volume by it, ``dividend`` multiplies prices
    by D(t), ``all`` does both; docs/design/api-internals.md gives the formula."""

    RAW = "raw"
    SPLIT = "split"
    DIVIDEND = "dividend"
    ALL = "all"


class Bar(msgspec.Struct, gc=False):
    """One bar. For ``1w``/``1mo`` the timestamp is the first trading day in the bucket.

    An intraday bar's timestamp is its start as an ISO date-time in exchange-local time with
    its UTC offset (``2024-01-02T09:30:00-05:00``): a ``datetime``, which msgspec encodes as
    such (``datetime`` is a ``date``); the daily ones stay ``YYYY-MM-DD``."""

    timestamp: date
    open: float
    high: float
    low: float
    close: float
    volume: int


class OhlcvSeries(msgspec.Struct, gc=False):
    symbol: str
    interval: Interval
    adjustment: Adjustment
    bars: list[Bar]


class Instrument(msgspec.Struct, gc=False):
    """A symbol with bars. The listing fields are those of the ``listings`` row its bars
    belong to (a reused ticker's: the latest listed on or before the first bar, else the
    earliest, as the pipeline's session checks pick it); null without one."""

    symbol: str
    first_date: date
    last_date: date
    bar_count: int
    name: str | None
    exchange: str | None
    asset_type: str | None
    status: str | None
    delisting_date: date | None
    missing_sessions: int
    """NYSE sessions without a bar from the first bar (or the listing's ipo_date, if later) to
    the last bar (or its delisting_date, if earlier)."""


class InstrumentList(msgspec.Struct, gc=False):
    instruments: list[Instrument]


class Stats(msgspec.Struct, gc=False):
    """Summary of the daily bars in ``[start, end]``; the value fields are null when count is 0."""

    symbol: str
    start: date | None
    end: date | None
    adjustment: Adjustment
    count: int
    first_date: date | None
    last_date: date | None
    average_close: float | None
    min_low: float | None
    max_high: float | None
    total_return: float | None
    """``last close / first close - 1`` over the range, of the adjusted closes: with
    ``dividend`` or ``all`` a total return with dividends reinvested."""


class Split(msgspec.Struct, gc=False):
    ex_date: date
    split_factor: float
    """New shares per old share; below 1 for a reverse split."""


class Dividend(msgspec.Struct, gc=False):
    ex_date: date
    amount: float
    """Cash per share as Alpha Vantage reports it."""
    declaration_date: date | None
    record_date: date | None
    payment_date: date | None


class CorporateActions(msgspec.Struct, gc=False):
    """One symbol's stored events in ``[start, end]`` by ex-date, each list ascending."""

    symbol: str
    splits: list[Split]
    dividends: list[Dividend]


class Health(msgspec.Struct, gc=False):
    status: Literal["ok"]
    data_version: str | None
    """The pipeline's data version; null before the first load."""
    newest_bar_date: date | None


BarRow = tuple[date, float, float, float, float, int]
"""A bar as ``queries`` returns it, in ``Bar`` field order; an intraday bar's timestamp is a
``datetime`` (exchange-local, aware for the wire: ``queries.intraday_bars``)."""

CSV_COLUMNS: tuple[str, ...] = ("timestamp", "open", "high", "low", "close", "volume")
LONG_COLUMNS: tuple[str, ...] = ("symbol", *CSV_COLUMNS)
"""The long form of many symbols' bars (``/bars`` as CSV, Arrow, Parquet): a row a bar."""


class BarsPage(msgspec.Struct, gc=False):
    """One page of ``GET /bars`` as JSON (streamed; this Struct states its shape)."""

    interval: Interval
    adjustment: Adjustment
    bars: dict[str, list[Bar]]
    """Per symbol with bars in the page, ascending by timestamp; symbols in order."""
    next_page_token: str | None
    """Pass it as ``page_token`` for the next page; null on the last one."""
    missing_symbols: list[str]
    """Asked symbols with no bars stored at all (the others are answered)."""


def arrow_schema(interval: Interval, with_symbol: bool) -> pa.Schema:
    """The typed columns of the Arrow and Parquet answers: the day as a date (daily, weekly,
    monthly) or the bar's start as a New York timestamp (intraday), float64 prices, int64
    volume; ``symbol`` first in the long form."""
    moment = pa.timestamp("us", tz=EXCHANGE_TZ.key) if interval.intraday else pa.date32()
    fields = [
        pa.field("timestamp", moment),
        *(pa.field(name, pa.float64()) for name in ("open", "high", "low", "close")),
        pa.field("volume", pa.int64()),
    ]
    if with_symbol:
        fields.insert(0, pa.field("symbol", pa.string()))
    return pa.schema(fields)


json_encoder = msgspec.json.Encoder()


def bars_csv(rows: Iterable[Sequence[object]]) -> bytes:
    """The CSV twin of ``OhlcvSeries.bars``: same columns, same number formatting (``repr``).

    ``csv.writer`` loops in C; dates print as ``YYYY-MM-DD`` through ``str(date)``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows(rows)
    return buffer.getvalue().encode()


def intraday_bars_csv(rows: Iterable[Sequence[object]]) -> bytes:
    """``bars_csv`` of intraday bars: the timestamp as in JSON (``isoformat``: a ``T`` and the
    offset), where ``str(datetime)`` would print a space."""
    return bars_csv((cast(datetime, row[0]).isoformat(), *row[1:]) for row in rows)
