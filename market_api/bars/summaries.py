"""Every symbol's summary (span, bar count, listing, missing sessions), once per data version.

``/instruments`` and the ``has_bars`` of ``/listings`` both read it. Counting the missing
sessions joins every bar with the calendar, so the summaries are computed on the first question
of a data version and kept until the next one, as ``bulk.KnownSymbols`` keeps the symbol sets:
an ``/instruments`` answer of thousands of symbols is too large for the response cache, and
would otherwise scan the table on every request (docs/api.md, "Listings and the calendar").
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import date

import duckdb

from market_api.bars import queries
from market_api.bars.queries import InstrumentRow


@dataclass(frozen=True, slots=True)
class Summaries:
    rows: list[InstrumentRow]
    """``queries.instruments``: by symbol."""
    spans: dict[str, tuple[date, date]]
    """Per symbol with bars, its first and last bar's date."""

    def has_bars(self, symbol: str, since: date | None, until: date | None) -> bool:
        """Whether ``symbol``'s bars overlap the days from ``since`` to ``until`` (None: open)."""
        span = self.spans.get(symbol)
        if span is None:
            return False
        first, last = span
        return (until is None or first <= until) and (since is None or last >= since)


class SymbolSummaries:
    """The summaries of the latest data version asked about (one entry: a question of an older
    version, a page token's, computes its own and replaces it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._version: tuple[str | None] | None = None
        self._summaries: Summaries | None = None

    def of(self, cur: duckdb.DuckDBPyConnection, version: str | None) -> Summaries:
        """The summaries at ``version``, which ``cur`` reads."""
        with self._lock:
            if self._version == (version,) and self._summaries is not None:
                return self._summaries
        rows = queries.instruments(cur)
        found = Summaries(rows, {row[0]: (row[1], row[2]) for row in rows})
        with self._lock:
            self._version, self._summaries = (version,), found
        return found
