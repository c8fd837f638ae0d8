"""The wire contract: msgspec Structs for every JSON body, and the CSV layout of a bar series.

Paths, field names and field order are fixed; clients and the README rely on them. Dates go out
as ``YYYY-MM-DD`` (msgspec's encoding of ``datetime.date``), symbols upper-case.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from datetime import date
from enum import StrEnum
from typing import Literal

import msgspec


class Interval(StrEnum):
    """Bar length: daily bars as stored, or ISO weeks / calendar months aggregated in DuckDB."""

    DAY = "1d"
    WEEK = "1w"
    MONTH = "1mo"


class Adjustment(StrEnum):
    """How prices are adjusted for corporate actions at read time (the stored bars never are).

    ``split`` divides prices by S(t) and multiplies volume by it, ``dividend`` multiplies prices
    by D(t), ``all`` does both; ``queries.py`` holds the formula."""

    RAW = "raw"
    SPLIT = "split"
    DIVIDEND = "dividend"
    ALL = "all"


class Bar(msgspec.Struct, gc=False):
    """One bar. For ``1w``/``1mo`` the timestamp is the first trading day in the bucket."""

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
    symbol: str
    first_date: date
    last_date: date
    bar_count: int


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


class ErrorBody(msgspec.Struct):
    status_code: int
    error: str
    detail: str
    parameter: str | None
    """The query or path parameter at fault (400 only)."""


BarRow = tuple[date, float, float, float, float, int]
"""A bar as ``queries`` returns it, in ``Bar`` field order."""

CSV_COLUMNS: tuple[str, ...] = ("timestamp", "open", "high", "low", "close", "volume")

json_encoder = msgspec.json.Encoder()


def bars_csv(rows: Iterable[Sequence[object]]) -> bytes:
    """The CSV twin of ``OhlcvSeries.bars``: same columns, same number formatting (``repr``).

    ``csv.writer`` loops in C; dates print as ``YYYY-MM-DD`` through ``str(date)``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows(rows)
    return buffer.getvalue().encode()
