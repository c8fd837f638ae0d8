"""Bars of many symbols: the question of ``GET /bars``, its SQL, and its pages read in batches.

A page is read as keyset batches on (symbol, timestamp), each a query of its own at the page's
data version, so an answer of any size holds one batch at a time and a loader waiting for the
DuckDB file waits for one batch at most, never for a slow client's download. The same
batches feed the Arrow and Parquet answers of ``/instruments/{symbol}/ohlcv``. The adjustments
and the weekly and monthly buckets use the single-symbol path's formulas (``queries``) and
factor steps (``factors``), so every bar is bit-identical to that path's. docs/api.md
("Bulk reads") describes the pages and tokens; ``plan`` says why spans of whole symbols.
"""

from __future__ import annotations

import hashlib
import threading
from array import array
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from functools import partial
from typing import Any

import duckdb
import msgspec
import numpy as np
import pyarrow as pa

from market_api.bars import queries
from market_api.bars.key_order import in_key_order
from market_api.bars.queries import ADJUSTED_COLUMNS, BUCKET_COLUMNS, FactorSteps
from market_api.bars.questions import bar_range
from market_api.bars.schemas import Adjustment, Interval, arrow_schema
from market_core.exchange import EXCHANGE_TZ
from market_core.schema import INTRADAY_TABLE, TABLE

STEPS_VIEW = "bulk_factor_steps"
"""The name the factor steps of an adjusted answer are registered under, on the cursor."""

Key = tuple[str, datetime]
"""Where a bar sorts: its symbol and its stored timestamp (naive, exchange-local; a bucket's is
its first day's)."""

Pinned = Callable[[Callable[[duckdb.DuckDBPyConnection], Any]], Any]
"""Runs a query on a cursor of the answer's one data version (``MarketService``)."""

Source = Callable[[Sequence[str] | None, Key | None, int], pa.Table]
"""Reads what ``fetch`` reads, with no query: at most ``rows`` bars after a key, of a span's
symbols (None: the question's), in key order, typed as ``fetch`` types them (``by_symbol``)."""


@dataclass(frozen=True, slots=True)
class BulkQuestion:
    """What a ``/bars`` request asks, normalized: the same question whatever the spelling."""

    symbols: tuple[str, ...] | None
    """Upper-case, sorted, each once; None for every symbol with bars."""
    interval: Interval
    start: date | None
    end: date | None
    adjustment: Adjustment
    as_of: datetime | None = None

    @classmethod
    def parse(
        cls,
        symbols: Sequence[str] | None,
        interval: Interval,
        start: date | None,
        end: date | None,
        adjustment: Adjustment,
        as_of: datetime | None = None,
    ) -> BulkQuestion:
        """``symbols`` already valid (``params.parse_symbols``); the range read as the
        single-symbol path reads it (``bar_range``)."""
        start, end = bar_range(interval, start, end)
        chosen = None if symbols is None else tuple(sorted(set(symbols)))
        return cls(chosen, interval, start, end, adjustment, as_of)

    def digest(self) -> str:
        """The normalized question, hashed: what a page token and an ETag are bound to."""
        text = msgspec.json.encode(
            [
                self.symbols,
                self.interval.value,
                _iso(self.start),
                _iso(self.end),
                self.adjustment.value,
                _iso(self.as_of),
            ]
        )
        return hashlib.blake2b(text, digest_size=16).hexdigest()

    def from_bar(self, start: date) -> BulkQuestion:
        """The same question from ``start`` on (the newest N bars: ``newest_start``)."""
        return BulkQuestion(
            self.symbols, self.interval, start, self.end, self.adjustment, self.as_of
        )


def _iso(moment: date | None) -> str | None:
    return None if moment is None else moment.isoformat()


@dataclass(frozen=True, slots=True)
class Page:
    """Which bars of a question one answer holds: ``limit`` of them (None: all) after
    ``after`` (None: from the first)."""

    limit: int | None
    after: Key | None = None


def _source_sql(
    question: BulkQuestion, span: bool, after: bool, adjusted: bool, one: bool = False
) -> str:
    """The stored bars a query reads: (symbol, timestamp, open, high, low, close, volume), the
    adjusted ones through an ASOF join on each symbol's first factor step after the bar.

    ``one``: the symbol ``$key_symbol`` alone; ``span``: the symbols ``$first`` to ``$last``
    (a range the zone maps of a table stored by symbol skip on), of them only those of
    ``$span`` when the question names symbols (a list of a few dozen, where the question's
    own list of up to 1,000 costs every batch query a larger lookup)."""
    intraday = question.interval.intraday
    where = ["timestamp >= $low", "timestamp < $high"]
    if intraday:
        where.append("interval = $interval")
    if one:
        where.append("symbol = $key_symbol")
    elif span:
        where.append("symbol >= $first AND symbol <= $last")
        if question.symbols is not None:
            where.append("list_contains($span, symbol)")
    elif question.symbols is not None:
        where.append("list_contains($symbols, symbol)")
    if after:
        where.append("symbol >= $after_symbol")
    raw = (
        "SELECT symbol, timestamp, open, high, low, close, volume "
        f"FROM {INTRADAY_TABLE if intraday else TABLE} WHERE {' AND '.join(where)}"
    )
    if not adjusted:
        return raw
    return f"""SELECT symbol, timestamp, {ADJUSTED_COLUMNS} FROM (
        SELECT b.*, coalesce(f.s, 1.0) AS s, coalesce(f.d, 1.0) AS d
        FROM ({raw}) AS b ASOF LEFT JOIN {STEPS_VIEW} AS f
            ON b.symbol = f.symbol AND b.timestamp < f.ex_at
    )"""


def _keyed_sql(question: BulkQuestion, source: str) -> str:
    """The bars of ``source`` with their sort key ``moment``: weekly and monthly buckets are built
    here, from the (adjusted) daily bars, as ``queries._BUCKET_SQL`` builds them."""
    unit = queries.UNITS.get(question.interval)
    if unit is None:
        return f"SELECT symbol, timestamp AS moment, open, high, low, close, volume FROM ({source})"
    return (
        f"SELECT symbol, min(timestamp) AS moment, {BUCKET_COLUMNS} FROM ({source}) "
        f"GROUP BY symbol, date_trunc('{unit}', timestamp)"
    )


def batch_sql(
    question: BulkQuestion, span: bool, after: bool, adjusted: bool, whole: bool = False
) -> str:
    """One batch: the next ``$rows`` bars after the key, by symbol then timestamp; ``whole``:
    every bar after the key, in the order the query meets them (``key_order`` sorts them)."""
    keyed = _keyed_sql(question, _source_sql(question, span, after, adjusted))
    moment = "timezone($zone, moment)" if question.interval.intraday else "CAST(moment AS DATE)"
    keyset = (
        "WHERE symbol > $after_symbol OR (symbol = $after_symbol AND moment > $after_at)"
        if after
        else ""
    )
    select = f"""SELECT symbol, {moment} AS timestamp, open, high, low, close, volume
    FROM ({keyed}) AS bars {keyset}"""
    return select if whole else f"{select}\n    ORDER BY symbol, moment\n    LIMIT $rows"


def counts_sql(question: BulkQuestion, after: bool) -> str:
    """Bars per symbol after the key, exactly (weekly and monthly: buckets): what a page is
    planned from, its end included."""
    source = _source_sql(question, span=False, after=after, adjusted=False)
    unit = queries.UNITS.get(question.interval)
    count, moment, at = "count(*)", "timestamp", "$after_at"
    if unit is not None:
        moment, at = f"date_trunc('{unit}', timestamp)", f"date_trunc('{unit}', $after_at)"
        count = f"count(DISTINCT {moment})"
    keyset = f"WHERE symbol > $after_symbol OR {moment} > {at}" if after else ""
    # symbol >= $after_symbol is in the source
    return f"SELECT symbol, {count} FROM ({source}) {keyset} GROUP BY symbol ORDER BY symbol"


def key_sql(question: BulkQuestion, after: bool) -> str:
    """The key of the ``$skip + 1``-th bar of ``$key_symbol`` (after ``$after_at``: the page
    starts inside that symbol)."""
    source = _source_sql(question, span=False, after=False, adjusted=False, one=True)
    keyset = "WHERE moment > $after_at" if after else ""
    return (
        f"SELECT moment FROM ({_keyed_sql(question, source)}) {keyset} "
        "ORDER BY moment LIMIT 1 OFFSET $skip"
    )


def newest_sql(question: BulkQuestion) -> str:
    """The key of the ``$skip + 1``-th newest bar: where the newest N begin."""
    keyed = _keyed_sql(question, _source_sql(question, span=False, after=False, adjusted=False))
    return f"SELECT moment FROM ({keyed}) ORDER BY moment DESC LIMIT 1 OFFSET $skip"


def _params(question: BulkQuestion, sql: str, **values: object) -> dict[str, object]:
    """The bound values ``sql`` names, and only those (DuckDB refuses unused ones)."""
    low, high = _bounds(question)
    symbols = question.symbols
    known: dict[str, object] = {
        "low": low,
        "high": high,
        "interval": question.interval.value,
        "symbols": None if symbols is None else list(symbols),
        "zone": EXCHANGE_TZ.key,
        **values,
    }
    return {name: value for name, value in known.items() if f"${name}" in sql}


def _bounds(question: BulkQuestion) -> tuple[datetime, datetime]:
    if question.interval.intraday:
        return queries.intraday_range(question.start, question.end)
    return queries.day_range(question.start, question.end)


class KnownSymbols:
    """The symbols with bars of one data version, per table: which asked symbols are unknown
    is then a set lookup, where asking the table is a scan of every bar (~4x the distinct
    symbols' scan for 500 symbols, which runs once per version here)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._version: tuple[str | None] | None = None
        self._sets: dict[str, frozenset[str]] = {}

    def of(
        self, cur: duckdb.DuckDBPyConnection, question: BulkQuestion, version: str | None
    ) -> set[str]:
        """The asked symbols known at ``version`` (``cur`` reads it): for intraday bars, those
        with daily or intraday bars (the single-symbol path's 404 rule)."""
        tables = (TABLE, INTRADAY_TABLE) if question.interval.intraday else (TABLE,)
        known: set[str] = set()
        for table in tables:
            stored = self._stored(cur, table, version)
            known.update(symbol for symbol in question.symbols or () if symbol in stored)
        return known

    def _stored(
        self, cur: duckdb.DuckDBPyConnection, table: str, version: str | None
    ) -> frozenset[str]:
        with self._lock:
            if self._version == (version,) and table in self._sets:
                return self._sets[table]
        rows = cur.execute(f"SELECT DISTINCT symbol FROM {table}").fetchall()
        found = frozenset(row[0] for row in rows)
        with self._lock:
            if self._version != (version,):
                self._version, self._sets = (version,), {}
            self._sets[table] = found
        return found


class MonthCounts:
    """Stored daily bars per symbol and calendar month, of one data version: an upper bound of
    any window's bars per symbol, summed from a small matrix where the exact count scans the
    table (30-60 ms of a 500-symbol page on one core). A page whose bound fits its ``limit``
    is planned from it: no count, no cut (``BarBatches``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._version: tuple[str | None] | None = None
        self._rows: dict[str, int] = {}
        self._first = 0
        self._matrix = np.zeros((0, 0), dtype=np.int32)

    def bounds(
        self,
        cur: duckdb.DuckDBPyConnection,
        question: BulkQuestion,
        version: str | None,
        after: Key | None,
    ) -> list[tuple[str, int]]:
        """(symbol, at least its bars after ``after``) of ``question`` (daily bars, and the
        weekly and monthly ones built from them), in symbol order."""
        rows, first, matrix = self._of(cur, version)
        low = 0 if question.start is None else _month(question.start) - first
        high = matrix.shape[1] if question.end is None else _month(question.end) - first + 1
        sums = matrix[:, max(low, 0) : max(high, 0)].sum(axis=1)
        symbols = question.symbols if question.symbols is not None else sorted(rows)
        found: list[tuple[str, int]] = []
        for symbol in symbols:
            row = rows.get(symbol)
            if row is None or (after is not None and symbol < after[0]):
                continue
            count = int(sums[row])
            if after is not None and symbol == after[0]:
                since = max(low, _month(after[1]) - first, 0)
                count = int(matrix[row, since : max(high, 0)].sum())
            found.append((symbol, count))
        return found

    def _of(
        self, cur: duckdb.DuckDBPyConnection, version: str | None
    ) -> tuple[dict[str, int], int, np.ndarray]:
        with self._lock:
            if self._version == (version,):
                return self._rows, self._first, self._matrix
        found = cur.execute(MONTH_COUNTS_SQL).fetchnumpy()
        symbols, months = found["symbol"], found["month"].astype(np.int64)
        names, rows = np.unique(symbols, return_inverse=True)
        first = int(months.min()) if len(months) else 0
        width = int(months.max()) - first + 1 if len(months) else 0
        matrix = np.zeros((len(names), width), dtype=np.int32)
        np.add.at(matrix, (rows, months - first), found["bars"].astype(np.int32))
        index = {str(name): row for row, name in enumerate(names)}
        with self._lock:
            self._version, self._rows, self._first, self._matrix = (version,), index, first, matrix
        return index, first, matrix


MONTH_COUNTS_SQL = f"""SELECT symbol, year(timestamp) * 12 + month(timestamp) - 1 AS month,
    count(*) AS bars FROM {TABLE} GROUP BY ALL"""


def _month(moment: date) -> int:
    return moment.year * 12 + moment.month - 1


def newest_start(cur: duckdb.DuckDBPyConnection, question: BulkQuestion, n: int) -> date | None:
    """Where the newest ``n`` bars of ``question`` begin (a datetime for intraday bars); None
    when there are no more than ``n``."""
    sql = newest_sql(question)
    row = cur.execute(sql, _params(question, sql, skip=n - 1)).fetchone()
    if row is None:
        return None
    at: datetime = row[0]
    return at if question.interval.intraday else at.date()


def bar_counts(
    cur: duckdb.DuckDBPyConnection, question: BulkQuestion, after: Key | None
) -> list[tuple[str, int]]:
    sql = counts_sql(question, after is not None)
    found = cur.execute(sql, _params(question, sql, **_after(after))).fetchall()
    return [(symbol, int(count)) for symbol, count in found]


def key_at(
    cur: duckdb.DuckDBPyConnection, question: BulkQuestion, cut: tuple[str, int], after: Key | None
) -> Key:
    """The key of bar ``cut[1]`` (1-based) of symbol ``cut[0]`` after ``after``: where a page
    planned by ``plan`` ends."""
    symbol, nth = cut
    inside = after is not None and after[0] == symbol
    sql = key_sql(question, inside)
    values: dict[str, object] = {"key_symbol": symbol, "skip": nth - 1}
    if inside and after is not None:
        values["after_at"] = after[1]
    row = cur.execute(sql, _params(question, sql, **values)).fetchone()
    if row is None:  # counted at this version a moment ago: cannot happen at one version
        raise LookupError(f"{symbol}: no bar {nth}")
    return symbol, row[0]


def _after(after: Key | None) -> dict[str, object]:
    return {} if after is None else {"after_symbol": after[0], "after_at": after[1]}


@dataclass(frozen=True, slots=True)
class Span:
    """Whole symbols (the last maybe cut by the page's end) read by one query per batch."""

    symbols: tuple[str, ...]
    rows: int
    """Bars of the page in the span (an upper bound when planned from ``MonthCounts``)."""
    whole: bool = True
    """Every bar of its symbols after the page's key is in the page (no symbol cut)."""


def plan(
    counts: Sequence[tuple[str, int]], limit: int | None, batch_rows: int
) -> tuple[list[Span], tuple[str, int] | None]:
    """The page of ``limit`` bars (None: all) as contiguous symbol spans of at most
    ``batch_rows`` bars each, in order (a symbol with more is a span of its own, read in
    several batches), and the page's cut: (symbol, n) when more bars follow, the page ending at
    that symbol's n-th bar. One query per span reads only its symbols' rows, where a ``LIMIT``
    over all of them would sort every later row again; the cut known before the first byte
    lets every format carry the next page's token in a header."""
    spans: list[Span] = []
    symbols: list[str] = []
    rows = total = 0
    last: tuple[str, int] | None = None
    cut: tuple[str, int] | None = None
    partial = False
    for symbol, count in counts:
        if count <= 0:
            continue
        if limit is not None and total >= limit:
            cut = last
            break
        take = count if limit is None else min(count, limit - total)
        if rows and rows + take > batch_rows:
            spans.append(Span(tuple(symbols), rows))
            symbols, rows = [], 0
        symbols.append(symbol)
        rows, total, last = rows + take, total + take, (symbol, take)
        partial = take < count
        if partial:
            cut = last
            break
    if rows:
        spans.append(Span(tuple(symbols), rows, whole=not partial))
    return spans, cut


def steps_table(steps: Mapping[str, FactorSteps], adjustment: Adjustment) -> pa.Table:
    """Every step of ``steps`` as rows (symbol, ex_at, s, d), S and D as ``adjustment``
    applies them: what the batches' ASOF join reads."""
    symbols: list[str] = []
    ex_us, split, dividend = array("q"), array("d"), array("d")
    for symbol, found in steps.items():
        s, d = found.factors(adjustment)
        symbols.extend([symbol] * len(found.ex_us))
        ex_us.extend(found.ex_us)
        split.extend(s)
        dividend.extend(d)
    return pa.table(
        {
            "symbol": pa.array(symbols, pa.string()),
            "ex_at": pa.array(ex_us, pa.int64()).cast(pa.timestamp("us")),
            "s": pa.array(split, pa.float64()),
            "d": pa.array(dividend, pa.float64()),
        }
    )


def fetch(
    cur: duckdb.DuckDBPyConnection,
    question: BulkQuestion,
    span: Sequence[str] | None,
    after: Key | None,
    rows: int,
    steps: pa.Table | None,
    whole: bool = False,
) -> pa.Table:
    """One batch: at most ``rows`` bars after ``after`` (of the symbols of ``span``, in order),
    typed as the Arrow answers are (``schemas.arrow_schema``). ``whole``: the query reads every
    bar after ``after``, with no ``ORDER BY``, and they are put in order here (``key_order``):
    for a span that holds no more than ``rows``."""
    adjusted = steps is not None and steps.num_rows > 0
    sql = batch_sql(question, span is not None, after is not None, adjusted, whole)
    values: dict[str, object] = {"rows": rows, **_after(after)}
    if span is not None:
        values["first"], values["last"], values["span"] = span[0], span[-1], list(span)
    if adjusted:
        cur.register(STEPS_VIEW, steps)
    try:
        table = cur.execute(sql, _params(question, sql, **values)).to_arrow_table()
    finally:
        if adjusted:
            cur.unregister(STEPS_VIEW)
    table = table.cast(arrow_schema(question.interval, with_symbol=True))
    return in_key_order(table).slice(0, rows) if whole else table


def last_key(table: pa.Table) -> Key:
    """The key of a batch's last bar, to continue after it."""
    symbol = table.column("symbol")[-1].as_py()
    moment = table.column("timestamp")[-1].as_py()
    if isinstance(moment, datetime):
        return symbol, moment.astimezone(EXCHANGE_TZ).replace(tzinfo=None)
    return symbol, datetime.combine(moment, time())


class BarBatches:
    """One page of a question, batch after batch, each query at the page's data version
    (``pinned``). Once the first batch is read, ``end`` says where the next page starts (None:
    this is the last page): a page of one batch reads one bar more than it sends, a longer one
    is planned from its bars per symbol (``plan``) before it is read."""

    def __init__(
        self,
        pinned: Pinned,
        question: BulkQuestion,
        page: Page,
        batch_rows: int,
        steps: pa.Table | None,
        bounds: Callable[[Key | None], list[tuple[str, int]]] | None = None,
        source: Source | None = None,
    ) -> None:
        self._pinned = pinned
        self.question = question
        self._limit = page.limit
        self.after = page.after
        self._batch_rows = batch_rows
        self._steps = steps
        self._bounds = bounds
        """At least each symbol's bars after a key, without a scan (``MonthCounts``)."""
        self._source = source
        """Reads the batches in place of ``fetch`` (the page's counts and cut stay queries)."""
        self.end: Key | None = None
        """The key of the page's last bar when more bars follow it."""

    def __iter__(self) -> Iterator[pa.Table]:
        limit = self._limit
        if limit is not None and limit < self._batch_rows:
            yield from self._one(limit)
            return
        question, after = self.question, self.after
        if self._bounds is not None:
            bounds = self._bounds(after)
            if limit is None or sum(count for _, count in bounds) <= limit:
                for span in plan(bounds, None, self._batch_rows)[0]:
                    yield from self._span(span)
                return
        counts = self._pinned(lambda cur: bar_counts(cur, question, after))
        spans, cut = plan(counts, limit, self._batch_rows)
        if cut is not None:
            self.end = self._pinned(lambda cur: key_at(cur, question, cut, after))
        for span in spans:
            yield from self._span(span)

    def _one(self, limit: int) -> Iterator[pa.Table]:
        table = self._fetch(None, limit + 1)
        if table.num_rows > limit:
            table = table.slice(0, limit)
            self.end = last_key(table)
        if table.num_rows:
            self.after = last_key(table)
            yield table

    def _span(self, span: Span) -> Iterator[pa.Table]:
        if span.whole and span.rows <= self._batch_rows:  # one query, sorted only if need be
            table = self._fetch(span.symbols, span.rows, whole=True)
            if table.num_rows:
                self.after = last_key(table)
                yield table
            return
        remaining = span.rows
        while remaining > 0:
            want = min(self._batch_rows, remaining)
            table = self._fetch(span.symbols, want)
            if not table.num_rows:
                return
            self.after = last_key(table)
            yield table
            remaining -= table.num_rows
            if table.num_rows < want:
                return

    def _fetch(self, span: Sequence[str] | None, rows: int, whole: bool = False) -> pa.Table:
        if self._source is not None:
            return self._source(span, self.after, rows)
        table: pa.Table = self._pinned(
            partial(
                fetch,
                question=self.question,
                span=span,
                after=self.after,
                rows=rows,
                steps=self._steps,
                whole=whole,
            )
        )
        return table
