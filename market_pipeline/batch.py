"""Running many symbols through the stages in one Dagster step: the executor.

A backfill of 1000 symbols is one run (``BackfillPolicy.single_run``), not 3000 processes. Each
symbol is fetched on its own (``raw_data``); fetched symbols are then cleaned a batch at a time
(``clean_data``: one validation query for the batch, files read and written on a thread pool),
and their clean bars upserted in batches of rows (``ohlcv_data``: one transaction each, on a
writer thread, so that batch N is loaded while batch N+1 is cleaned). ``market_pipeline.plan``
decides the batches; this module runs them. A symbol is still the unit of failure: one symbol's
bad answer, bad data or failed write never stops the others. The run returns a typed result per
symbol and stage, or the symbol's failure (``market_pipeline.outcome``); the asset reports them
to Dagster and fails at the end, naming every failed symbol, if any did.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor

import polars as pl

from market_core.assets import CLEAN, OHLCV, RAW, STAGES
from market_core.home import DataHome
from market_core.schema import TABLE
from market_pipeline.outcome import (
    BatchOutcome,
    Cleaned,
    Loaded,
    NotAttempted,
    StageFailed,
    StageResult,
    SymbolFailure,
    dates,
)
from market_pipeline.plan import BatchSettings, CleanBatch, LoadBatch, Planner
from market_pipeline.resources.alpha_vantage import AlphaVantageClient
from market_pipeline.resources.av_errors import (
    AlphaVantageError,
    DailyQuotaError,
    InvalidApiKeyError,
)
from market_pipeline.resources.storage import MarketDuckDB
from market_pipeline.stages.clean import CleanError, CleanResult, clean_symbols
from market_pipeline.stages.ohlcv import LoadError, LoadStats, read_cleans
from market_pipeline.stages.raw import fetch_raw

__all__ = ["BatchOutcome", "BatchRunner", "BatchSettings"]  # callers need only this module

# Errors we expect per symbol; anything else is a bug and fails the step loudly.
SYMBOL_ERRORS = (AlphaVantageError, CleanError, LoadError, OSError)
# Errors after which no later symbol can succeed: the rest of the batch is not attempted.
STOP_ERRORS = (InvalidApiKeyError, DailyQuotaError)


class BatchRunner:
    """The stages selected for a run and what they read and write; ``run`` executes them."""

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

    def run(self, symbols: Sequence[str]) -> BatchOutcome:
        with (
            ThreadPoolExecutor(self.settings.threads, "batch-io") as pool,
            ThreadPoolExecutor(1, "batch-load") as writer,
        ):
            return _Run(self, pool, writer).over(symbols)


class _Run:
    """One run's state: the planner, the results so far, the bars waiting for their load
    batch and the load in flight on the writer thread."""

    def __init__(self, runner: BatchRunner, pool: Executor, writer: Executor) -> None:
        self.home, self.stages, self.settings = runner.home, runner.stages, runner.settings
        self.client, self.duckdb, self.log = runner.client, runner.duckdb, runner.log
        self.pool, self.writer = pool, writer
        self.planner = Planner(runner.settings)
        self.results: dict[str, dict[str, StageResult]] = {stage: {} for stage in self.stages}
        self.failures: dict[str, SymbolFailure] = {}
        self.stop_reason: str | None = None
        self.waiting: dict[str, pl.DataFrame] = {}
        self.loading: tuple[dict[str, pl.DataFrame], Future[LoadStats]] | None = None

    def over(self, symbols: Sequence[str]) -> BatchOutcome:
        started = time.monotonic()
        every = max(1, len(symbols) // 20)
        for taken, symbol in enumerate(symbols, start=1):
            if self.stop_reason is not None:
                self.failures[symbol] = NotAttempted(symbol, self.stop_reason)
                continue
            if self._fetch(symbol):
                self.planner.fetched(symbol, time.monotonic())
            if (batch := self.planner.clean_due(time.monotonic())) is not None:
                self._clean(batch)
            if taken % every == 0 and taken < len(symbols):
                self._progress(taken, len(symbols), time.monotonic() - started)
        if (batch := self.planner.rest_clean()) is not None:
            self._clean(batch)
        if (load := self.planner.rest_load()) is not None:
            self._start_load(load)
        self._finish_load()
        self._progress(len(symbols), len(symbols), time.monotonic() - started)
        return BatchOutcome(tuple(symbols), self.results, self.failures)

    def _fetch(self, symbol: str) -> bool:
        """``raw_data`` for one symbol, if selected; False if the symbol failed."""
        if RAW not in self.stages:
            return True
        assert self.client is not None
        try:
            raw = fetch_raw(self.client, self.home, symbol, self.settings.outputsize)
        except STOP_ERRORS as exc:  # every later symbol would fail the same way
            self.stop_reason = str(exc).removeprefix(f"{symbol}: ")
            self._failed(symbol, RAW, str(exc), f"{symbol}: failed, stopping this run: {exc}")
            return False
        except SYMBOL_ERRORS as exc:
            self._failed(symbol, RAW, str(exc))
            return False
        self.results[RAW][symbol] = raw
        return True

    def _failed(self, symbol: str, stage: str, message: str, log: str | None = None) -> None:
        self.failures[symbol] = StageFailed(symbol, stage, message)
        self.log(log or f"{symbol}: failed: {message}")

    def _clean(self, batch: CleanBatch) -> None:
        """Clean a batch (or read its clean files) and hand the load batches due to the writer."""
        frames = self._clean_frames(batch.symbols)
        if OHLCV not in self.stages:
            return
        self.waiting.update(frames)
        rows = {symbol: frame.height for symbol, frame in frames.items()}
        for load in self.planner.cleaned(batch, rows, time.monotonic()):
            self._start_load(load)

    def _clean_frames(self, symbols: Sequence[str]) -> dict[str, pl.DataFrame]:
        """Each symbol's clean bars: ``clean_data`` if selected, else its clean file when the
        bars are to be loaded; a symbol that fails is recorded and left out."""
        frames: dict[str, pl.DataFrame] = {}
        if CLEAN in self.stages:
            for symbol, result in clean_symbols(
                self.home, symbols, self.settings.rules, self.pool
            ).items():
                if isinstance(result, CleanResult):
                    self.results[CLEAN][symbol] = Cleaned.of(result)
                    frames[symbol] = result.validated.clean
                else:
                    self._failed(symbol, CLEAN, str(result))
        elif OHLCV in self.stages:
            for symbol, read in read_cleans(self.home, symbols).items():
                if isinstance(read, pl.DataFrame):
                    frames[symbol] = read
                else:
                    self._failed(symbol, OHLCV, str(read))
        return frames

    def _start_load(self, load: LoadBatch) -> None:
        """Hand a batch to the writer thread, after the previous load has finished: one
        writer, batches committed in order."""
        self._finish_load()
        frames = {symbol: self.waiting.pop(symbol) for symbol in load.symbols}
        assert self.duckdb is not None
        self.loading = (frames, self.writer.submit(self.duckdb.load, list(frames.values())))

    def _finish_load(self) -> None:
        """Wait for the load in flight, if any, and record its symbols' outcome."""
        if self.loading is None:
            return
        (frames, future), self.loading = self.loading, None
        try:
            stats = future.result()
        except Exception as exc:  # the batch rolled back: every symbol in it failed to load
            for symbol in frames:
                self.failures[symbol] = StageFailed(
                    symbol, OHLCV, f"{symbol}: DuckDB upsert failed: {exc}"
                )
            self.log(f"DuckDB upsert of {len(frames)} symbols failed and was rolled back: {exc}")
            return
        self.log(
            f"Upserted {stats.rows} bars of {len(frames)} symbols: {stats.inserted} new, "
            f"{stats.updated} revised, {stats.unchanged} unchanged"
        )
        assert self.duckdb is not None
        database = str(self.duckdb.database)
        for symbol, frame in frames.items():
            first, last = dates(frame)
            self.results[OHLCV][symbol] = Loaded(
                symbol, frame.height, first, last, TABLE, database, stats.inserted, stats.updated
            )

    def _progress(self, done: int, total: int, elapsed: float) -> None:
        """Symbols taken so far (fetched, when ``raw_data`` runs, which is then the slow part);
        the last line comes after the last load."""
        left = total - done
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = left / rate if rate > 0 else 0.0
        self.log(
            f"progress: {done}/{total} symbols done, {left} left, "
            f"{len(self.failures)} failed, ~{eta:.0f}s to go at the current pace"
        )
