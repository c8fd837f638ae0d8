"""The question of ``GET /listings`` and its page, read at one data version and encoded in the
asked format.

A page is read whole (a listing is ~150 bytes, a page at most ``MAX_LISTINGS_LIMIT`` of them)
and continues through a signed page token of the bars' kind (``bars.tokens``): the last listing
sent, (symbol, ipo_date), stands where a bar's (symbol, timestamp) does.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time

import duckdb
import msgspec
import pyarrow as pa

from market_api.bars.service import MarketService, keeps_history
from market_api.bars.summaries import SymbolSummaries
from market_api.bars.tokens import PageToken
from market_api.http.encoders import ArrowStreamEncoder, BatchEncoder, ParquetEncoder
from market_api.http.negotiation import Format
from market_api.readers.errors import VersionGone
from market_api.universe import queries
from market_api.universe.queries import Filters, Key, ListingRow
from market_api.universe.schemas import (
    LISTING_ARROW_SCHEMA,
    LISTING_COLUMNS,
    AssetType,
    Listing,
    ListingsPage,
    Status,
    json_encoder,
)

NEXT_PAGE_TOKEN = "next-page-token"
"""The header that carries ``next_page_token`` in every format (CSV, Arrow and Parquet have no
place for it in the body)."""


@dataclass(frozen=True, slots=True)
class ListingsQuestion:
    filters: Filters

    @classmethod
    def parse(
        cls,
        status: Status,
        exchange: str | None,
        asset_type: AssetType | None,
        on: date | None,
        search: str | None,
    ) -> ListingsQuestion:
        """``exchange`` comma-separated, case-insensitive (empty entries ignored); an empty
        ``search`` matches everything."""
        exchanges = None
        if exchange:
            named = {part.strip().upper() for part in exchange.split(",")} - {""}
            exchanges = tuple(sorted(named)) or None
        return cls(
            Filters(
                status=None if status is Status.ALL else status.value,
                exchanges=exchanges,
                asset_type=None if asset_type is None else asset_type.value,
                on=on,
                search=search or None,
            )
        )

    def digest(self) -> str:
        """The normalized filters, hashed: what a page token is bound to."""
        f = self.filters
        text = msgspec.json.encode(
            ["listings", f.status, f.exchanges, f.asset_type, f.on, f.search]
        )
        return hashlib.blake2b(text, digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class ListingsAnswer:
    body: bytes
    next_page_token: str | None


def token_key(token: PageToken) -> Key:
    symbol, moment = token.after
    return symbol, moment.date()


def token_after(key: Key) -> tuple[str, datetime]:
    """A listing's key as a page token holds a bar's: the ipo_date at midnight."""
    return key[0], datetime.combine(key[1], time())


def read_page(
    cur: duckdb.DuckDBPyConnection,
    question: ListingsQuestion,
    after: Key | None,
    limit: int,
    summaries: SymbolSummaries,
    version: str | None,
    fmt: Format,
    sign: Callable[[Key], str],
) -> ListingsAnswer:
    """One page (``limit`` listings after ``after``) in ``fmt``, with the token of the next."""
    rows = queries.listings(cur, question.filters, after, limit + 1)
    token = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        token = sign((last[0], last[4] or date.min))
    found = summaries.of(cur, version) if rows else None
    with_bars = [found is not None and found.has_bars(r[0], r[4], r[5]) for r in rows]
    return ListingsAnswer(encode(fmt, rows, with_bars, token), token)


def encode(
    fmt: Format, rows: Sequence[ListingRow], with_bars: Sequence[bool], token: str | None
) -> bytes:
    if fmt == "csv":
        return _csv(rows, with_bars)
    if fmt in ("arrow", "parquet"):
        make: Callable[[pa.Schema], BatchEncoder] = (
            ArrowStreamEncoder if fmt == "arrow" else ParquetEncoder
        )
        encoder = make(LISTING_ARROW_SCHEMA)
        return encoder.encode(_table(rows, with_bars)) + encoder.finish()
    page = ListingsPage(
        [Listing(*row, has_bars) for row, has_bars in zip(rows, with_bars, strict=True)], token
    )
    return json_encoder.encode(page)


def _csv(rows: Sequence[ListingRow], with_bars: Sequence[bool]) -> bytes:
    """A header row, then a listing per line: dates ``YYYY-MM-DD``, a null empty, ``has_bars``
    ``true`` or ``false`` as in JSON."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(LISTING_COLUMNS)
    writer.writerows(
        (*row, "true" if has_bars else "false")
        for row, has_bars in zip(rows, with_bars, strict=True)
    )
    return buffer.getvalue().encode()


def _table(rows: Sequence[ListingRow], with_bars: Sequence[bool]) -> pa.Table:
    columns: list[Sequence[object]] = (
        list(zip(*rows, strict=True)) if rows else [() for _ in LISTING_COLUMNS[:-1]]
    )
    arrays = [
        pa.array(column, field.type)
        for column, field in zip([*columns, with_bars], LISTING_ARROW_SCHEMA, strict=True)
    ]
    return pa.Table.from_arrays(arrays, schema=LISTING_ARROW_SCHEMA)


def read_listings(
    service: MarketService,
    question: ListingsQuestion,
    limit: int,
    token: PageToken | None,
    fmt: Format,
) -> ListingsAnswer:
    """A page at the token's data version, or the newest (blocking: a worker thread's). The
    single file keeps only its latest data: a load since the token was cut is a 410, as on
    ``/bars``; the lake reads the token's snapshot."""
    reader, digest = service.reader, question.digest()
    strict = not keeps_history(reader)
    version = service.cache.snapshot()[1] if token is None else token.version
    after = None if token is None else token_key(token)

    def sign(key: Key) -> str:
        return service.signer.sign(PageToken(version, digest, token_after(key)))

    def run(cur: duckdb.DuckDBPyConnection) -> ListingsAnswer:
        if strict and token is not None and reader.data_version() != version:
            raise VersionGone(version)
        return read_page(cur, question, after, limit, service.summaries, version, fmt, sign)

    return reader.run_at(version, run)
