"""The body of a streamed bar answer, written batch by batch in the asked format.

JSON and CSV are written here, with the single-symbol answer's encoder and number formatting,
so a bar reads the same in either; Arrow and Parquet by ``http.encoders``. ``StreamedAnswer``
runs the batches (``bulk.BarBatches``); the next page's token is known once the first batch is
read, before the first byte is sent (``next_page_token``).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from itertools import groupby
from operator import itemgetter
from typing import Protocol

import pyarrow as pa

from market_api.bars.bulk import BarBatches, Key
from market_api.bars.schemas import (
    CSV_COLUMNS,
    LONG_COLUMNS,
    Adjustment,
    Bar,
    Interval,
    arrow_schema,
    json_encoder,
)
from market_api.http.encoders import ArrowStreamEncoder, BatchEncoder, ParquetEncoder
from market_api.http.negotiation import Format


class PageWriter(Protocol):
    """A page's body: ``head``, ``encode`` per batch in order, then ``tail`` once."""

    def head(self) -> bytes: ...

    def encode(self, table: pa.Table) -> bytes: ...

    def tail(self, next_page_token: str | None, missing: Sequence[str]) -> bytes: ...


class JsonPage:
    """``{"interval", "adjustment", "bars": {"AAPL": [...], ...}, "next_page_token",
    "missing_symbols"}`` (``schemas.BarsPage``); a symbol's list may span batches."""

    def __init__(self, interval: Interval, adjustment: Adjustment) -> None:
        self._interval = interval
        self._adjustment = adjustment
        self._open: str | None = None
        """The symbol whose list is open."""

    def head(self) -> bytes:
        head = json_encoder.encode({"interval": self._interval, "adjustment": self._adjustment})
        return head[:-1] + b',"bars":{'

    def encode(self, table: pa.Table) -> bytes:
        out = bytearray()
        columns = [table.column(name).to_pylist() for name in LONG_COLUMNS]
        for symbol, rows in groupby(zip(*columns, strict=True), key=itemgetter(0)):
            bars = json_encoder.encode([Bar(*row[1:]) for row in rows])[1:-1]
            if symbol == self._open:
                out += b"," + bars
                continue
            if self._open is not None:
                out += b"],"
            out += json_encoder.encode(symbol) + b":[" + bars
            self._open = symbol
        return bytes(out)

    def tail(self, next_page_token: str | None, missing: Sequence[str]) -> bytes:
        close = b"]" if self._open is not None else b""
        rest = json_encoder.encode(
            {"next_page_token": next_page_token, "missing_symbols": list(missing)}
        )
        return close + b"}," + rest[1:]


class CsvPage:
    """Long form, a header row then a bar per line: ``bars_csv``'s formatting with ``symbol``
    first (intraday timestamps ISO, with their offset)."""

    def __init__(self, with_symbol: bool) -> None:
        self._columns = LONG_COLUMNS if with_symbol else CSV_COLUMNS

    def head(self) -> bytes:
        return (",".join(self._columns) + "\r\n").encode()

    def encode(self, table: pa.Table) -> bytes:
        columns = [table.column(name).to_pylist() for name in self._columns]
        at = self._columns.index("timestamp")
        columns[at] = [_text(moment) for moment in columns[at]]
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\r\n").writerows(zip(*columns, strict=True))
        return buffer.getvalue().encode()

    def tail(self, next_page_token: str | None, missing: Sequence[str]) -> bytes:
        return b""


def _text(moment: object) -> str:
    return moment.isoformat() if isinstance(moment, datetime) else str(moment)


class EncodedPage:
    """An Arrow or Parquet body (``http.encoders``): the columns of ``arrow_schema``."""

    def __init__(
        self, make: Callable[[pa.Schema], BatchEncoder], interval: Interval, with_symbol: bool
    ) -> None:
        self._schema = arrow_schema(interval, with_symbol)
        self._encoder = make(self._schema)

    def head(self) -> bytes:
        return b""

    def encode(self, table: pa.Table) -> bytes:
        return self._encoder.encode(table.select(self._schema.names))

    def tail(self, next_page_token: str | None, missing: Sequence[str]) -> bytes:
        return self._encoder.finish()


def page_writer(
    fmt: Format, interval: Interval, adjustment: Adjustment, with_symbol: bool
) -> PageWriter:
    """The writer of ``fmt``; JSON only in the ``/bars`` page shape (``with_symbol``)."""
    if fmt == "arrow":
        return EncodedPage(ArrowStreamEncoder, interval, with_symbol)
    if fmt == "parquet":
        return EncodedPage(ParquetEncoder, interval, with_symbol)
    if fmt == "csv":
        return CsvPage(with_symbol)
    return JsonPage(interval, adjustment)


class StreamedAnswer:
    """An answer's body in pieces: ``first`` (the head and the first batch, read before the
    200 is sent, so that a failure there is still a proper error, and so that the next page's
    token is known for a header) and then ``rest``."""

    def __init__(
        self,
        batches: BarBatches,
        writer: PageWriter,
        missing: Sequence[str],
        next_token: Callable[[Key], str] | None,
    ) -> None:
        self._batches = batches
        self._iterator: Iterator[pa.Table] = iter(batches)
        self._writer = writer
        self.missing = tuple(missing)
        self._next_token = next_token
        self.next_page_token: str | None = None
        """Set by ``first``: the token of the next page, None on the last one."""
        self._done = False

    def first(self) -> bytes:
        head = self._writer.head()
        piece = self._piece()
        end = self._batches.end
        if end is not None and self._next_token is not None:
            self.next_page_token = self._next_token(end)
        return head + (piece if piece is not None else self.next() or b"")

    def _piece(self) -> bytes | None:
        table = next(self._iterator, None)
        return None if table is None else self._writer.encode(table)

    def next(self) -> bytes | None:
        """The next piece of the body (maybe empty), or None once the tail was given."""
        if self._done:
            return None
        piece = self._piece()
        if piece is not None:
            return piece
        self._done = True
        return self._writer.tail(self.next_page_token, self.missing)
