"""The daily and corporate-actions runner: many symbols through their stages in one Dagster step.

A backfill of 1000 symbols is one run, not 3000 processes: symbols are fetched one by one,
cleaned a batch at a time and upserted a batch of rows per transaction on a writer thread
(``runs.plan`` decides the batches). A symbol is the unit of failure. Corporate actions come
after every symbol's bars, for the symbols whose actions are due. docs/design/runs-and-assets.md
tells the whole story.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor

import polars as pl

from market_core.assets import ACTIONS, CLEAN, OHLCV, RAW, RAW_ACTIONS, STAGES
from market_core.home import DataHome
from market_core.schema import ACTIONS_TABLE, TABLE
from market_core.store import StoreWriter
from market_pipeline.actions.clean import ActionsError, ActionsResult, clean_actions
from market_pipeline.actions.fetch import fetch_raw_actions, last_actions_fetch
from market_pipeline.actions.known import unexplained_by_symbol
from market_pipeline.actions.policy import ACTIONS_CALLS, Due, affordable, asked, due_symbols
from market_pipeline.daily.clean import CleanError, CleanResult, clean_symbols
from market_pipeline.daily.fetch import fetch_raw
from market_pipeline.runs.outcome import (
    ActionsFetched,
    ActionsLoaded,
    BatchOutcome,
    Cleaned,
    ErrorKind,
    Loaded,
    NotAttempted,
    StageFailed,
    StageResult,
    SymbolFailure,
    dates,
)
from market_pipeline.runs.plan import BatchSettings, CleanBatch, LoadBatch, Planner
from market_pipeline.source.client import AlphaVantageClient
from market_pipeline.source.errors import (
    AlphaVantageError,
    DailyQuotaError,
    InvalidApiKeyError,
)
from market_pipeline.source.rate_limit import LimiterStoreError
from market_pipeline.store.bars import LoadError, LoadStats, read_cleans

__all__ = ["BatchOutcome", "BatchRunner", "BatchSettings"]  # callers need only this module

# Errors we expect per symbol; anything else is a bug and fails the step loudly.
SYMBOL_ERRORS = (AlphaVantageError, CleanError, LoadError, ActionsError, OSError)
# Errors after which no later symbol can succeed: the rest of the batch is not attempted.
STOP_ERRORS = (InvalidApiKeyError, DailyQuotaError)
ALL_STAGES = (*STAGES, RAW_ACTIONS, ACTIONS)
"""Every stage, in the order the executor runs them: the bars, then the corporate actions."""


class BatchRunner:
    """The stages selected for a run and what they read and write; ``run`` executes them."""

    def __init__(
        self,
        *,
        home: DataHome,
        client: AlphaVantageClient | None,
        duckdb: StoreWriter | None,
        stages: Sequence[str],
        settings: BatchSettings,
        log: Callable[[str], None],
        calls_left: Callable[[], int | None] = lambda: None,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        report: Callable[[str, str, StageResult], None] = lambda *_: None,
        stopped: Callable[[], bool] = lambda: False,
    ) -> None:
        self.home = home
        self.client = client
        self.duckdb = duckdb
        self.stages = [s for s in ALL_STAGES if s in stages]
        self.settings = settings
        self.log = log
        self.calls_left = calls_left
        """The daily quota's calls left (``None``: no quota), asked before fetching actions."""
        self.now = now
        self.report = report
        """Called with each result as it is recorded (the op reports it while the run goes on)."""
        self.stopped = stopped
        """True once the run is to stop: the symbols not taken yet are not attempted."""

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
        self.calls_left, self.now = runner.calls_left, runner.now
        self.report, self.stopped = runner.report, runner.stopped
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
            if self._halted():
                assert self.stop_reason is not None
                self.failures[symbol] = NotAttempted(symbol, RAW, self.stop_reason)
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
        self._actions(symbols)
        unexplained = self._unexplained()
        return BatchOutcome(tuple(symbols), self.results, self.failures, unexplained)

    def _fetch(self, symbol: str) -> bool:
        """``raw_data`` for one symbol, if selected; False if the symbol failed."""
        if RAW not in self.stages:
            return True
        assert self.client is not None
        try:
            raw = fetch_raw(self.client, self.home, symbol, self.settings.outputsize)
        except STOP_ERRORS as exc:  # every later symbol would fail the same way
            self.stop_reason = str(exc).removeprefix(f"{symbol}: ")
            self._failed(symbol, RAW, exc, f"{symbol}: failed, stopping this run: {exc}")
            return False
        except SYMBOL_ERRORS as exc:
            self._failed(symbol, RAW, exc)
            return False
        self._record(RAW, symbol, raw)
        return True

    def _failed(self, symbol: str, stage: str, exc: Exception, log: str | None = None) -> None:
        self.failures[symbol] = StageFailed.of(symbol, stage, exc)
        self.log(log or f"{symbol}: failed: {exc}")

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
                    self._record(CLEAN, symbol, Cleaned.of(result))
                    frames[symbol] = result.validated.clean
                else:
                    self._failed(symbol, CLEAN, result)
        elif OHLCV in self.stages:
            for symbol, read in read_cleans(self.home, symbols).items():
                if isinstance(read, pl.DataFrame):
                    frames[symbol] = read
                else:
                    self._failed(symbol, OHLCV, read)
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
                    symbol, OHLCV, ErrorKind.LOAD, f"{symbol}: DuckDB upsert failed: {exc}"
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
            loaded = Loaded(
                symbol, frame.height, first, last, TABLE, database, stats.inserted, stats.updated
            )
            self._record(OHLCV, symbol, loaded)

    def _actions(self, symbols: Sequence[str]) -> None:
        """The corporate actions of the symbols whose bars did not fail, after all bars."""
        ready = [s for s in symbols if s not in self.failures]
        if not ready:
            return
        if RAW_ACTIONS in self.stages:
            ready = self._fetch_actions(ready)
        if ACTIONS in self.stages and ready:
            self._load_actions(ready)

    def _fetch_actions(self, symbols: Sequence[str]) -> list[str]:
        """``raw_actions`` for the due symbols the quota allows; the symbols fetched."""
        last = {s: last_actions_fetch(self.home, s) for s in symbols}
        if RAW in self.stages:
            wanted = set(symbols)
            moves = {s: r.large_moves for s, r in self.results.get(CLEAN, {}).items()
                     if isinstance(r, Cleaned) and s in wanted}  # fmt: skip
            unexplained = unexplained_by_symbol(self.home, moves, self.duckdb)
            dues = due_symbols(symbols, last, self.now(), unexplained)
        else:
            dues = asked(symbols, last)
        if not dues:
            self.log(f"corporate actions: none of {len(symbols)} symbols due (fetched this week)")
            return []
        take = self._affordable(dues, len(symbols))
        fetched: list[str] = []
        for due in take:
            if self._halted():
                assert self.stop_reason is not None
                self.failures[due.symbol] = NotAttempted(due.symbol, RAW_ACTIONS, self.stop_reason)
            elif self._fetch_one(due):
                fetched.append(due.symbol)
        return fetched

    def _affordable(self, dues: list[Due], symbols: int) -> list[Due]:
        """The due symbols the daily quota still allows, most urgent first; says what waits.

        With the limiter's store out of reach, no call is allowed: they wait, and stay due."""
        try:
            calls = self.calls_left() if dues else None
        except LimiterStoreError as exc:
            self.log(f"corporate actions wait: {exc}")
            calls = 0
        take = dues[: affordable(calls, len(dues))]
        waiting = [d.symbol for d in dues[len(take) :]]
        self.log(
            f"corporate actions: {len(dues)} of {symbols} symbols due, {len(take)} fetched now "
            f"({ACTIONS_CALLS} calls each)"
            + (f"; {calls} calls left today" if calls is not None else "")
            + (f"; waiting for calls (they stay due): {', '.join(waiting[:20])}" if waiting else "")
        )
        return take

    def _fetch_one(self, due: Due) -> bool:
        symbol = due.symbol
        assert self.client is not None
        try:
            raw = fetch_raw_actions(self.client, self.home, symbol)
        except STOP_ERRORS as exc:
            self.stop_reason = str(exc).removeprefix(f"{symbol}: ")
            self._failed(symbol, RAW_ACTIONS, exc,
                         f"{symbol}: corporate actions failed, stopping them: {exc}")  # fmt: skip
            return False
        except SYMBOL_ERRORS as exc:
            self._failed(symbol, RAW_ACTIONS, exc)
            return False
        self._record(RAW_ACTIONS, symbol, ActionsFetched.of(raw, due.detail))
        return True

    def _load_actions(self, symbols: Sequence[str]) -> None:
        """``corporate_actions``: validate, then load a batch of symbols per transaction."""
        good: list[ActionsResult] = []
        for symbol, result in clean_actions(self.home, symbols).items():
            if isinstance(result, ActionsResult):
                good.append(result)
            else:
                self._failed(symbol, ACTIONS, result)
        size = max(1, self.settings.load_batch_symbols)
        for start in range(0, len(good), size):
            self._load_actions_batch(good[start : start + size])

    def _load_actions_batch(self, batch: list[ActionsResult]) -> None:
        assert self.duckdb is not None
        try:
            stats = self.duckdb.load_actions(batch)
        except Exception as exc:  # the transaction rolled back: every symbol in it failed
            for result in batch:
                self.failures[result.symbol] = StageFailed(
                    result.symbol,
                    ACTIONS,
                    ErrorKind.LOAD,
                    f"{result.symbol}: corporate actions load failed: {exc}",
                )
            self.log(f"corporate actions load of {len(batch)} symbols rolled back: {exc}")
            return
        vanished = stats.deleted_by_symbol
        self.log(
            f"corporate actions of {len(batch)} symbols loaded: {stats.inserted} new, "
            f"{stats.updated} revised, {stats.deleted} vanished"
            + ("".join(f"; {s}: {', '.join(v)}" for s, v in sorted(vanished.items())))
        )
        database = str(self.duckdb.database)
        for result in batch:
            loaded = ActionsLoaded.of(
                result,
                vanished=tuple(vanished.get(result.symbol, ())),
                rejects_path=str(self.home.actions_rejects_file(result.symbol)),
                table=ACTIONS_TABLE,
                database=database,
                batch=(stats.inserted, stats.updated, stats.deleted),
            )
            self._record(ACTIONS, result.symbol, loaded)

    def _halted(self) -> bool:
        """True once no later symbol is to be tried: a key answer, or the run stopped."""
        if self.stop_reason is None and self.stopped():
            self.stop_reason = "the run was stopped before this symbol"
        return self.stop_reason is not None

    def _record(self, stage: str, symbol: str, result: StageResult) -> None:
        self.results[stage][symbol] = result
        self.report(stage, symbol, result)

    def _unexplained(self) -> dict[str, tuple[dt.date, ...]]:
        """Per cleaned symbol with large moves, those no known action explains, read after
        this run's actions were loaded (the ``unexplained_large_move`` check)."""
        if CLEAN not in self.stages:
            return {}
        moves = {s: r.large_moves for s, r in self.results[CLEAN].items()
                 if isinstance(r, Cleaned)}  # fmt: skip
        return unexplained_by_symbol(self.home, moves, self.duckdb)

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
