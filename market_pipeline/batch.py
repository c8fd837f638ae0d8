"""Running many symbols through the stages in one Dagster step.

A backfill of 1000 symbols is one run (``BackfillPolicy.single_run``), not 3000 processes. Each
symbol is fetched on its own (``raw_data``); fetched symbols are then cleaned a batch at a time
(``clean_data``: one validation query for the batch, files read and written on a thread pool),
and their clean bars upserted in batches of rows (``ohlcv_data``: one transaction each, on a
writer thread, so that batch N is loaded while batch N+1 is cleaned). A symbol is still the
unit of failure: one symbol's bad answer, bad data or failed write never stops the others. The
step then reports each symbol's result to Dagster as its own materialization, and fails at the
end, naming every failed symbol, if any did: the others stay materialized and the failed ones
can be retried on their own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from market_core.assets import CLEAN, OHLCV, RAW, STAGES
from market_core.home import DataHome
from market_core.schema import TABLE
from market_pipeline.resources.alpha_vantage import AlphaVantageClient
from market_pipeline.resources.av_errors import (
    AlphaVantageError,
    DailyQuotaError,
    InvalidApiKeyError,
)
from market_pipeline.resources.storage import MarketDuckDB
from market_pipeline.settings import OutputSize
from market_pipeline.stages.clean import CleanError, CleanResult, clean_symbols
from market_pipeline.stages.ohlcv import LoadError, LoadStats, read_cleans
from market_pipeline.stages.raw import fetch_raw
from market_pipeline.validation import Rules

# Errors we expect per symbol; anything else is a bug and fails the step loudly.
SYMBOL_ERRORS = (AlphaVantageError, CleanError, LoadError, OSError)
# Errors after which no later symbol can succeed: the rest of the batch is not attempted.
STOP_ERRORS = (InvalidApiKeyError, DailyQuotaError)
Metadata = dict[str, Any]


@dataclass
class BatchOutcome:
    """What happened to each symbol, per stage."""

    materialized: dict[str, dict[str, Metadata]] = field(
        default_factory=lambda: {stage: {} for stage in STAGES}
    )
    failures: dict[str, str] = field(default_factory=dict)
    reject_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    flag_counts: dict[str, dict[str, int]] = field(default_factory=dict)

    def fail(self, symbol: str, message: str) -> None:
        self.failures[symbol] = message


@dataclass(frozen=True)
class BatchSettings:
    """Batch sizes. A load transaction holds the DuckDB write lock (the API waits for it), so
    it is bounded by rows (about a second per million on 2 cores) as well as by symbols; a
    daily update of 1000 symbols x 100 bars is one transaction. ``load_batch_seconds`` bounds
    how long fetched bars wait for their batch when the source is slow (a rate-limited key).
    ``clean_batch_symbols`` are validated in one query; ``threads`` read and write their files.
    """

    outputsize: OutputSize
    rules: Rules
    load_batch_symbols: int = 1000
    load_batch_rows: int = 500_000
    load_batch_seconds: float = 10.0
    clean_batch_symbols: int = 100
    threads: int = 4


@dataclass
class _Load:
    """Clean bars waiting for their transaction."""

    frames: dict[str, pl.DataFrame] = field(default_factory=dict)
    rows: int = 0
    since: float = 0.0

    def add(self, symbol: str, frame: pl.DataFrame, queued_at: float) -> None:
        if not self.frames:
            self.since = queued_at
        self.frames[symbol] = frame
        self.rows += frame.height


def _preview(frame: pl.DataFrame, rows: int = 5) -> str:
    """The newest bars as a Markdown table, for the Dagster UI."""
    tail = frame.tail(rows).with_columns(pl.col("timestamp").dt.date())
    lines = ["| " + " | ".join(tail.columns) + " |", "|" + "---|" * tail.width]
    lines += ["| " + " | ".join("" if v is None else str(v) for v in row) + " |"
              for row in tail.iter_rows()]  # fmt: skip
    return "\n".join(lines)


def _dates(frame: pl.DataFrame) -> tuple[str, str]:
    ts = frame.get_column("timestamp")
    return str(ts.min())[:10], str(ts.max())[:10]


class BatchRunner:
    """Drives the selected stages over a list of symbols and collects an outcome."""

    def __init__(
        self,
        *,
        home: DataHome,
        client: AlphaVantageClient | None,
        duckdb: MarketDuckDB | None,
        stages: Sequence[str],
        settings: BatchSettings,
        log: Callable[[str], None],
    ) -> None:
        self.home = home
        self.client = client
        self.duckdb = duckdb
        self.stages = [s for s in STAGES if s in stages]
        self.settings = settings
        self.log = log
        self.outcome = BatchOutcome()
        self._queue: list[str] = []
        self._queued_at = 0.0
        self._load = _Load()
        self._loading: tuple[dict[str, pl.DataFrame], Future[LoadStats]] | None = None
        self._stop_reason: str | None = None

    def run(self, symbols: Sequence[str]) -> BatchOutcome:
        started = time.monotonic()
        every = max(1, len(symbols) // 20)
        with (
            ThreadPoolExecutor(self.settings.threads, "batch-io") as pool,
            ThreadPoolExecutor(1, "batch-load") as writer,
        ):
            for taken, symbol in enumerate(symbols, start=1):
                if self._stop_reason is not None:
                    self.outcome.fail(symbol, f"{symbol}: not attempted: {self._stop_reason}")
                    continue
                self._fetch(symbol)
                if self._queue and (
                    len(self._queue) >= self.settings.clean_batch_symbols
                    or time.monotonic() - self._queued_at >= self.settings.load_batch_seconds
                ):
                    self._process(pool, writer)
                if taken % every == 0 and taken < len(symbols):
                    self._progress(taken, len(symbols), time.monotonic() - started)
            self._process(pool, writer, last=True)
            self._finish_load()
        self._progress(len(symbols), len(symbols), time.monotonic() - started)
        return self.outcome

    def _fetch(self, symbol: str) -> None:
        """``raw_data`` for one symbol, if selected; then the symbol waits for its batch."""
        if RAW in self.stages:
            assert self.client is not None
            try:
                raw = fetch_raw(self.client, self.home, symbol, self.settings.outputsize)
            except STOP_ERRORS as exc:  # every later symbol would fail the same way
                self._stop_reason = str(exc).removeprefix(f"{symbol}: ")
                self._failed(symbol, str(exc), f"{symbol}: failed, stopping this run: {exc}")
                return
            except SYMBOL_ERRORS as exc:
                self._failed(symbol, str(exc))
                return
            self.outcome.materialized[RAW][symbol] = {
                "rows": raw.rows,
                "first_date": raw.first_date,
                "last_date": raw.last_date,
                "outputsize": raw.outputsize,
                "source": raw.source,
                "path": raw.path,
            }
        if not self._queue:
            self._queued_at = time.monotonic()
        self._queue.append(symbol)

    def _failed(self, symbol: str, message: str, log: str | None = None) -> None:
        self.outcome.fail(symbol, message)
        self.log(log or f"{symbol}: failed: {message}")

    def _process(self, pool: Executor, writer: Executor, last: bool = False) -> None:
        """Clean the queued symbols (or read their clean files) and load what is due."""
        queue, queued_at, self._queue = self._queue, self._queued_at, []
        frames: dict[str, pl.DataFrame] = {}
        if queue and CLEAN in self.stages:
            for symbol, result in clean_symbols(
                self.home, queue, self.settings.rules, pool
            ).items():
                if isinstance(result, CleanResult):
                    self._clean_metadata(symbol, result)
                    frames[symbol] = result.validated.clean
                else:
                    self._failed(symbol, str(result))
        elif queue and OHLCV in self.stages:
            for symbol, read in read_cleans(self.home, queue).items():
                if isinstance(read, pl.DataFrame):
                    frames[symbol] = read
                else:
                    self._failed(symbol, str(read))
        if OHLCV not in self.stages:
            return
        for symbol, frame in frames.items():
            self._load.add(symbol, frame, queued_at)
        if self._load.frames and (last or self._load_due()):
            self._start_load(writer)

    def _clean_metadata(self, symbol: str, result: CleanResult) -> None:
        v = result.validated
        self.outcome.reject_counts[symbol] = v.reject_counts
        self.outcome.flag_counts[symbol] = v.flag_counts
        first, last = _dates(v.clean)
        self.outcome.materialized[CLEAN][symbol] = {
            "rows": v.clean.height,
            "first_date": first,
            "last_date": last,
            "rejected": int(v.rejects.height),
            "flagged": int(v.clean.get_column("flags").is_not_null().sum()),
            "outside_history_window": v.filtered_out,
            "path": result.path,
            "rejects_path": result.rejects_path,
            "preview": _preview(v.clean),
        }

    def _load_due(self) -> bool:
        s = self.settings
        return (
            self._load.rows >= s.load_batch_rows
            or len(self._load.frames) >= s.load_batch_symbols
            or time.monotonic() - self._load.since >= s.load_batch_seconds
        )

    def _start_load(self, writer: Executor) -> None:
        """Hand the pending bars to the writer thread, after the previous load has finished:
        one writer, batches committed in order."""
        self._finish_load()
        batch, self._load = self._load.frames, _Load()
        self._loading = (batch, writer.submit(self._upsert, batch))

    def _upsert(self, batch: dict[str, pl.DataFrame]) -> LoadStats:
        assert self.duckdb is not None
        return self.duckdb.load(list(batch.values()))

    def _finish_load(self) -> None:
        """Wait for the load in flight, if any, and record its symbols' outcome."""
        if self._loading is None:
            return
        (batch, future), self._loading = self._loading, None
        try:
            stats = future.result()
        except Exception as exc:  # the batch rolled back: every symbol in it failed to load
            for symbol in batch:
                self.outcome.fail(symbol, f"{symbol}: DuckDB upsert failed: {exc}")
            self.log(f"DuckDB upsert of {len(batch)} symbols failed and was rolled back: {exc}")
            return
        self.log(
            f"Upserted {stats.rows} bars of {len(batch)} symbols: {stats.inserted} new, "
            f"{stats.updated} revised, {stats.unchanged} unchanged"
        )
        assert self.duckdb is not None
        for symbol, frame in batch.items():
            first, last = _dates(frame)
            self.outcome.materialized[OHLCV][symbol] = {
                "rows": frame.height,
                "first_date": first,
                "last_date": last,
                "table": TABLE,
                "database": str(self.duckdb.database),
                "batch_inserted": stats.inserted,
                "batch_revised": stats.updated,
            }

    def _progress(self, done: int, total: int, elapsed: float) -> None:
        """Symbols taken so far (fetched, when ``raw_data`` runs, which is then the slow part);
        the last line comes after the last load."""
        left = total - done
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = left / rate if rate > 0 else 0.0
        self.log(
            f"progress: {done}/{total} symbols done, {left} left, "
            f"{len(self.outcome.failures)} failed, ~{eta:.0f}s to go at the current pace"
        )
