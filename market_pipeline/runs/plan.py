"""Which symbols go in which batch: the pure half of ``runs.batch``.

It reads no file and no clock (the runner passes the time in), so its decisions are tested with
plain numbers; docs/design/runs-and-assets.md says how the batches are bounded and why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from market_pipeline.bars.rules import Rules
from market_pipeline.source.wire import OutputSize


@dataclass(frozen=True)
class BatchSettings:
    """Batch sizes, and the two settings the stages need. A load transaction holds the DuckDB
    write lock (the API waits for it), so it is bounded by rows (about a second per million on
    2 cores) as well as by symbols; a daily update of 1000 symbols x 100 bars is one
    transaction. ``load_batch_seconds`` bounds how long fetched bars wait for their batch when
    the source is slow (a rate-limited key). ``clean_batch_symbols`` are validated in one query;
    ``threads`` read and write their files.
    """

    outputsize: OutputSize
    rules: Rules
    load_batch_symbols: int = 1000
    load_batch_rows: int = 500_000
    load_batch_seconds: float = 10.0
    clean_batch_symbols: int = 100
    threads: int = 4


@dataclass(frozen=True)
class CleanBatch:
    """Symbols to validate together; ``since`` is when the first of them was queued."""

    symbols: tuple[str, ...]
    since: float


@dataclass(frozen=True)
class LoadBatch:
    """Symbols to load in one transaction, in the order they were cleaned."""

    symbols: tuple[str, ...]
    rows: int


class Planner:
    """Cuts the stream of symbols into clean batches, and cleaned symbols into load batches.

    A load batch stays within ``load_batch_rows`` unless one symbol alone has more; it closes
    as soon as it is full (rows or symbols), and when its oldest symbol has waited
    ``load_batch_seconds``, checked as each clean batch arrives.
    """

    def __init__(self, settings: BatchSettings) -> None:
        self.settings = settings
        self._clean: list[str] = []
        self._clean_since = 0.0
        self._load: list[str] = []
        self._load_rows = 0
        self._load_since = 0.0

    def fetched(self, symbol: str, now: float) -> None:
        """``symbol`` is ready to be cleaned (fetched, or not to be fetched in this run)."""
        if not self._clean:
            self._clean_since = now
        self._clean.append(symbol)

    def clean_due(self, now: float) -> CleanBatch | None:
        """The batch to clean now, if it is full or its first symbol has waited long enough."""
        s = self.settings
        if self._clean and (
            len(self._clean) >= s.clean_batch_symbols
            or now - self._clean_since >= s.load_batch_seconds
        ):
            return self.rest_clean()
        return None

    def rest_clean(self) -> CleanBatch | None:
        """Whatever waits to be cleaned, at the end of the run."""
        if not self._clean:
            return None
        batch = CleanBatch(tuple(self._clean), self._clean_since)
        self._clean = []
        return batch

    def cleaned(self, batch: CleanBatch, rows: Mapping[str, int], now: float) -> list[LoadBatch]:
        """Queue the symbols of ``batch`` that cleaned (``rows``: their bars; a symbol that
        failed is absent) for loading; the load batches due now, in the order to commit them."""
        s = self.settings
        due: list[LoadBatch] = []
        for symbol in batch.symbols:
            if symbol not in rows:
                continue
            if self._load and self._load_rows + rows[symbol] > s.load_batch_rows:
                due.append(self._take_load())
            if not self._load:
                self._load_since = batch.since
            self._load.append(symbol)
            self._load_rows += rows[symbol]
            if len(self._load) >= s.load_batch_symbols or self._load_rows >= s.load_batch_rows:
                due.append(self._take_load())
        if self._load and now - self._load_since >= s.load_batch_seconds:
            due.append(self._take_load())
        return due

    def rest_load(self) -> LoadBatch | None:
        """Whatever waits to be loaded, at the end of the run."""
        return self._take_load() if self._load else None

    def _take_load(self) -> LoadBatch:
        batch = LoadBatch(tuple(self._load), self._load_rows)
        self._load, self._load_rows = [], 0
        return batch
