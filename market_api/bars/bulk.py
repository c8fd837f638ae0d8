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
import pyarrow as pa

from market_api.bars import queries
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


def _source_sql(question: BulkQuestion, span: bool, after: bool, adjusted: bool) -> str:
    """The stored bars a batch reads: (symbol, timestamp, open, high, low, close, volume), the
    adjusted ones through an ASOF join on each symbol's first factor step after the bar."""
    intraday = question.interval.intraday
    where = ["timestamp >= $low", "timestamp < $high"]
    if intraday:
        where.append("interval = $interval")
    if question.symbols is not None:
        where.append("symbol IN (SELECT unnest($symbols))")
    if span:
        where.append("symbol >= $first AND symbol <= $last")
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


def batch_sql(question: BulkQuestion, span: bool, after: bool, adjusted: bool) -> str:
    """One batch: the next ``$rows`` bars after the key, by symbol then timestamp."""
    keyed = _keyed_sql(question, _source_sql(question, span, after, adjusted))
    moment = "timezone($zone, moment)" if question.interval.intraday else "CAST(moment AS DATE)"
    keyset = (
        "WHERE symbol > $after_symbol OR (symbol = $after_symbol AND moment > $after_at)"
        if after
        else ""
    )
    return f"""SELECT symbol, {moment} AS timestamp, open, high, low, close, volume
    FROM ({keyed}) AS bars {keyset}
    ORDER BY symbol, moment
    LIMIT $rows"""


def counts_sql(question: BulkQuestion, after: bool) -> str:
    """Stored bars per symbol after the key: what the batches are planned from (an upper bound
    of a symbol's weekly or monthly buckets)."""
    source = _source_sql(question, span=False, after=after, adjusted=False)
    keyset = (
        "WHERE symbol > $after_symbol OR timestamp > $after_at" if after else ""
    )  # symbol >= $after_symbol is in the source
    return f"SELECT symbol, count(*) FROM ({source}) {keyset} GROUP BY symbol ORDER BY symbol"


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


def _after(after: Key | None) -> dict[str, object]:
    return {} if after is None else {"after_symbol": after[0], "after_at": after[1]}


def plan(counts: Sequence[tuple[str, int]], batch_rows: int) -> list[tuple[str, str]]:
    """Contiguous symbol spans of at most ``batch_rows`` bars each, in order; a symbol with
    more is a span of its own, read in several batches. One query per span reads only its
    symbols' rows, where a ``LIMIT`` over all of them would sort every later row again."""
    spans: list[tuple[str, str]] = []
    first = last = ""
    total = 0
    for symbol, count in counts:
        if total and total + count > batch_rows:
            spans.append((first, last))
            total = 0
        if not total:
            first = symbol
        last, total = symbol, total + count
    if total:
        spans.append((first, last))
    return spans


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
    span: tuple[str, str] | None,
    after: Key | None,
    rows: int,
    steps: pa.Table | None,
) -> pa.Table:
    """One batch: at most ``rows`` bars after ``after`` (within ``span``), typed as the Arrow
    answers are (``schemas.arrow_schema``)."""
    adjusted = steps is not None and steps.num_rows > 0
    sql = batch_sql(question, span is not None, after is not None, adjusted)
    values: dict[str, object] = {"rows": rows, **_after(after)}
    if span is not None:
        values["first"], values["last"] = span
    if adjusted:
        cur.register(STEPS_VIEW, steps)
    try:
        table = cur.execute(sql, _params(question, sql, **values)).to_arrow_table()
    finally:
        if adjusted:
            cur.unregister(STEPS_VIEW)
    return table.cast(arrow_schema(question.interval, with_symbol=True))


def last_key(table: pa.Table) -> Key:
    """The key of a batch's last bar, to continue after it."""
    symbol = table.column("symbol")[-1].as_py()
    moment = table.column("timestamp")[-1].as_py()
    if isinstance(moment, datetime):
        return symbol, moment.astimezone(EXCHANGE_TZ).replace(tzinfo=None)
    return symbol, datetime.combine(moment, time())


class BarBatches:
    """One page of a question, batch after batch, each query at the page's data version
    (``pinned``); ``more`` and ``after`` say, once it is done, where the next page starts."""

    def __init__(
        self,
        pinned: Pinned,
        question: BulkQuestion,
        page: Page,
        batch_rows: int,
        steps: pa.Table | None,
    ) -> None:
        self._pinned = pinned
        self.question = question
        self._limit = page.limit
        self.after = page.after
        self._batch_rows = batch_rows
        self._steps = steps
        self.more = False

    def spans(self) -> list[tuple[str, str] | None]:
        """The symbol spans to read: all at once when the page fits one batch."""
        if self._limit is not None and self._limit < self._batch_rows:
            return [None]
        question, after = self.question, self.after
        counts = self._pinned(lambda cur: bar_counts(cur, question, after))
        return list(plan(counts, self._batch_rows))

    def __iter__(self) -> Iterator[pa.Table]:
        remaining = self._limit
        spans = self.spans()
        for index, span in enumerate(spans):
            while True:
                want = self._batch_rows
                if remaining is not None:
                    want = min(want, remaining + 1)
                table: pa.Table = self._pinned(
                    partial(
                        fetch,
                        question=self.question,
                        span=span,
                        after=self.after,
                        rows=want,
                        steps=self._steps,
                    )
                )
                got = table.num_rows
                if remaining is not None and got > remaining:
                    table, self.more = table.slice(0, remaining), True
                if table.num_rows:
                    self.after = last_key(table)
                    yield table
                if self.more:
                    return
                if remaining is not None:
                    remaining -= table.num_rows
                if got < want:
                    break
            if remaining == 0:
                self.more = index + 1 < len(spans)
                return
