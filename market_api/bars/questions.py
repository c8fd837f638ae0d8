"""The questions a request asks, normalized and validated, each answering with its encoded body.

A question runs in a worker thread on one cursor of one data version (``Read``), so the event
loop never runs SQL nor encodes a large body.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import ClassVar, Protocol, cast

import duckdb

from market_api.bars import queries
from market_api.bars.factors import FactorCache, steps_of
from market_api.bars.params import check_range, parse_symbol
from market_api.bars.schemas import (
    Adjustment,
    Bar,
    CorporateActions,
    Dividend,
    Health,
    Instrument,
    InstrumentList,
    Interval,
    OhlcvSeries,
    Split,
    Stats,
    bars_csv,
    intraday_bars_csv,
    json_encoder,
)
from market_api.bars.summaries import SymbolSummaries
from market_api.http.errors import InvalidParameter
from market_api.http.negotiation import Format
from market_api.readers.errors import UnknownSymbol
from market_api.settings import MAX_LIMIT
from market_core.schema import DIVIDEND, SPLIT

_JSON_ONLY: frozenset[Format] = frozenset({"json"})


@dataclass(frozen=True, slots=True)
class Read:
    """What an answer may use besides the cursor: the data version it is computed under (the
    cache's snapshot) and the factor steps of that version. An answer as of an older snapshot
    (``as_of``) has no cached steps (``factors`` None): it computes its symbol's on its cursor."""

    version: str | None
    factors: FactorCache | None

    def steps(
        self, cur: duckdb.DuckDBPyConnection, symbol: str, adjustment: Adjustment
    ) -> queries.FactorSteps:
        if adjustment is Adjustment.RAW:
            return queries.NO_STEPS
        if self.factors is None:
            return queries.factor_steps(cur, symbol)
        return self.factors.get(cur, symbol, self.version)

    def steps_of(
        self,
        cur: duckdb.DuckDBPyConnection,
        symbols: Sequence[str] | None,
        adjustment: Adjustment,
    ) -> dict[str, queries.FactorSteps]:
        """``steps`` of many symbols (sorted; None: all), those without events left out."""
        if adjustment is Adjustment.RAW:
            return {}
        if self.factors is None:
            return steps_of(cur, symbols)
        return self.factors.many(cur, symbols, self.version)


class Question(Protocol):
    """What a request asks, normalized; its ``answer`` is the body in one of ``formats``."""

    formats: ClassVar[frozenset[Format]]

    def answer(self, cur: duckdb.DuckDBPyConnection, fmt: Format, read: Read) -> bytes:
        """The encoded body; raises ``UnknownSymbol`` for a symbol with no bars at all."""
        ...


@dataclass(frozen=True, slots=True)
class HealthQuestion:
    formats: ClassVar[frozenset[Format]] = _JSON_ONLY

    def answer(self, cur: duckdb.DuckDBPyConnection, fmt: Format, read: Read) -> bytes:
        newest = queries.newest_bar_date(cur)
        return json_encoder.encode(
            Health(status="ok", data_version=read.version, newest_bar_date=newest)
        )


@dataclass(frozen=True, slots=True)
class InstrumentsQuestion:
    summaries: SymbolSummaries
    """The service's, computed once per data version."""
    formats: ClassVar[frozenset[Format]] = _JSON_ONLY

    def answer(self, cur: duckdb.DuckDBPyConnection, fmt: Format, read: Read) -> bytes:
        rows = self.summaries.of(cur, read.version).rows
        return json_encoder.encode(InstrumentList([Instrument(*row) for row in rows]))


@dataclass(frozen=True, slots=True)
class BarsQuestion:
    symbol: str
    interval: Interval
    start: date | None
    end: date | None
    """Dates for daily, weekly and monthly bars; for intraday ones a date or an exact naive
    exchange-local ``datetime`` (``parse``, ``queries.intraday_range``)."""
    limit: int | None
    adjustment: Adjustment = Adjustment.RAW
    as_of: datetime | None = None
    """Answer as the data stood then (lake mode only; ``MarketService.check_as_of``)."""
    formats: ClassVar[frozenset[Format]] = frozenset({"json", "csv"})

    @classmethod
    def parse(
        cls,
        symbol: str,
        interval: Interval,
        start: date | None,
        end: date | None,
        limit: int | None,
        adjustment: Adjustment = Adjustment.RAW,
        as_of: datetime | None = None,
    ) -> BarsQuestion:
        """The range as ``bar_range`` reads it."""
        start, end = bar_range(interval, start, end)
        if limit is not None and not 1 <= limit <= MAX_LIMIT:
            raise InvalidParameter("limit", f"limit must be between 1 and {MAX_LIMIT}")
        return cls(parse_symbol(symbol), interval, start, end, limit, adjustment, as_of)

    def answer(self, cur: duckdb.DuckDBPyConnection, fmt: Format, read: Read) -> bytes:
        if self.interval.intraday:
            return self._intraday(cur, fmt, read)
        steps = read.steps(cur, self.symbol, self.adjustment)
        rows = queries.bars(
            cur,
            self.symbol,
            self.interval,
            self.start,
            self.end,
            self.limit,
            self.adjustment,
            steps,
        )
        if not rows and not queries.symbol_exists(cur, self.symbol):
            raise UnknownSymbol(self.symbol)
        if fmt == "csv":
            return bars_csv(rows)
        bars = [Bar(*row) for row in rows]
        return json_encoder.encode(OhlcvSeries(self.symbol, self.interval, self.adjustment, bars))

    def _intraday(self, cur: duckdb.DuckDBPyConnection, fmt: Format, read: Read) -> bytes:
        """A known symbol with no intraday bars (none stored yet, or not at this interval)
        answers an empty series, as a daily range without bars does."""
        low, high = queries.intraday_range(self.start, self.end)
        steps = read.steps(cur, self.symbol, self.adjustment)
        rows = queries.intraday_bars(
            cur, self.symbol, self.interval, low, high, self.limit, self.adjustment, steps
        )
        if not rows and not queries.symbol_exists_intraday(cur, self.symbol):
            raise UnknownSymbol(self.symbol)
        if fmt == "csv":
            return intraday_bars_csv(rows)
        bars = [Bar(*row) for row in rows]
        return json_encoder.encode(OhlcvSeries(self.symbol, self.interval, self.adjustment, bars))


def bar_range(
    interval: Interval, start: date | None, end: date | None
) -> tuple[date | None, date | None]:
    """``start`` and ``end`` of a bar question, checked in order (400 naming ``start``).

    A ``datetime`` bound of a daily, weekly or monthly question counts as its date: those bars
    are dated by their day, so ``end=2024-01-02T10:00`` still includes the bar of January 2
    (and the cache key, not the question, differs from ``end=2024-01-02``). An intraday one
    is exact (``queries.intraday_range``)."""
    if interval.intraday:
        low, high = queries.intraday_range(start, end)
        if low >= high and high != datetime.max:  # the end of time is inclusive too
            raise InvalidParameter("start", f"start {start} is after end {end}")
        return start, end
    start, end = _day(start), _day(end)
    check_range(start, end)
    return start, end


def _day(moment: date | None) -> date | None:
    return moment.date() if isinstance(moment, datetime) else moment


@dataclass(frozen=True, slots=True)
class StatsQuestion:
    symbol: str
    start: date | None
    end: date | None
    adjustment: Adjustment = Adjustment.RAW
    formats: ClassVar[frozenset[Format]] = _JSON_ONLY

    @classmethod
    def parse(
        cls,
        symbol: str,
        start: date | None,
        end: date | None,
        adjustment: Adjustment = Adjustment.RAW,
    ) -> StatsQuestion:
        check_range(start, end)
        return cls(parse_symbol(symbol), start, end, adjustment)

    def answer(self, cur: duckdb.DuckDBPyConnection, fmt: Format, read: Read) -> bytes:
        steps = read.steps(cur, self.symbol, self.adjustment)
        count, first, last, avg_close, min_low, max_high, total_return = queries.stats(
            cur, self.symbol, self.start, self.end, self.adjustment, steps
        )
        if count == 0 and not queries.symbol_exists(cur, self.symbol):
            raise UnknownSymbol(self.symbol)
        stats = Stats(
            symbol=self.symbol,
            start=self.start,
            end=self.end,
            adjustment=self.adjustment,
            count=count,
            first_date=first,
            last_date=last,
            average_close=avg_close,
            min_low=min_low,
            max_high=max_high,
            total_return=total_return,
        )
        return json_encoder.encode(stats)


@dataclass(frozen=True, slots=True)
class ActionsQuestion:
    symbol: str
    start: date | None
    end: date | None
    formats: ClassVar[frozenset[Format]] = _JSON_ONLY

    @classmethod
    def parse(cls, symbol: str, start: date | None, end: date | None) -> ActionsQuestion:
        check_range(start, end)
        return cls(parse_symbol(symbol), start, end)

    def answer(self, cur: duckdb.DuckDBPyConnection, fmt: Format, read: Read) -> bytes:
        rows = queries.actions(cur, self.symbol, self.start, self.end)
        if not rows and not queries.symbol_known(cur, self.symbol):
            raise UnknownSymbol(self.symbol, "bars and no corporate actions")
        splits: list[Split] = []
        dividends: list[Dividend] = []
        for kind, ex_date, factor, amount, declared, recorded, paid in rows:
            if kind == SPLIT:
                splits.append(Split(ex_date, cast(float, factor)))
            elif kind == DIVIDEND:
                dividends.append(Dividend(ex_date, cast(float, amount), declared, recorded, paid))
        return json_encoder.encode(CorporateActions(self.symbol, splits, dividends))
