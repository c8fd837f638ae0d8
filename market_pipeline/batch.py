"""Running many symbols through the stages in one Dagster step.

A backfill of 1000 symbols is one run (``BackfillPolicy.single_run``), not 3000 processes. Inside
it each symbol goes raw -> clean on its own, so one symbol's failure never stops the others;
clean bars are upserted in batches of symbols (one transaction each) to keep the DuckDB write
windows short and few. The step then reports each symbol's result to Dagster as its own
materialization, and fails at the end, naming every failed symbol, if any did: the others stay
materialized and the failed ones can be retried on their own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from market_core.home import DataHome
from market_pipeline.resources.alpha_vantage import AlphaVantageClient
from market_pipeline.resources.av_errors import (
    AlphaVantageError,
    DailyQuotaError,
    InvalidApiKeyError,
)
from market_pipeline.resources.storage import MarketDuckDB
from market_pipeline.settings import OutputSize
from market_pipeline.stages.clean import CleanError, clean_symbol
from market_pipeline.stages.ohlcv import LoadError, LoadStats, read_clean, upsert
from market_pipeline.stages.raw import fetch_raw
from market_pipeline.validation import Rules

RAW, CLEAN, OHLCV = "raw_data", "clean_data", "ohlcv_data"
STAGES = (RAW, CLEAN, OHLCV)
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
    outputsize: OutputSize
    rules: Rules
    load_batch_symbols: int = 100
    load_batch_seconds: float = 10.0


def _preview(frame: pl.DataFrame, rows: int = 5) -> str:
    """The newest bars as a Markdown table, for the Dagster UI."""
    tail = frame.tail(rows).with_columns(pl.col("timestamp").dt.date())
    lines = ["| " + " | ".join(tail.columns) + " |", "|" + "---|" * tail.width]
    lines += ["| " + " | ".join("" if v is None else str(v) for v in row) + " |"
              for row in tail.iter_rows()]  # fmt: skip
    return "\n".join(lines)


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
        self._pending: dict[str, pl.DataFrame] = {}
        self._pending_since = 0.0
        self._stop_reason: str | None = None

    def run(self, symbols: Sequence[str]) -> BatchOutcome:
        started = time.monotonic()
        every = max(1, len(symbols) // 20)
        for done, symbol in enumerate(symbols, start=1):
            if self._stop_reason is not None:
                self.outcome.fail(symbol, f"{symbol}: not attempted: {self._stop_reason}")
                continue
            self._one(symbol)
            if self._should_flush():
                self._flush()
            if done % every == 0 or done == len(symbols):
                self._progress(done, len(symbols), time.monotonic() - started)
        self._flush()
        return self.outcome

    def _one(self, symbol: str) -> None:
        try:
            if RAW in self.stages:
                assert self.client is not None
                raw = fetch_raw(self.client, self.home, symbol, self.settings.outputsize)
                self.outcome.materialized[RAW][symbol] = {
                    "rows": raw.rows,
                    "first_date": raw.first_date,
                    "last_date": raw.last_date,
                    "outputsize": raw.outputsize,
                    "source": raw.source,
                    "path": raw.path,
                }
            if CLEAN in self.stages:
                self._clean(symbol)
            if OHLCV in self.stages:
                if not self._pending:
                    self._pending_since = time.monotonic()
                self._pending[symbol] = read_clean(self.home, symbol)
        except STOP_ERRORS as exc:  # every later symbol would fail the same way
            self.outcome.fail(symbol, str(exc))
            self._stop_reason = str(exc).removeprefix(f"{symbol}: ")
            self.log(f"{symbol}: failed, stopping this run: {exc}")
        except SYMBOL_ERRORS as exc:
            self.outcome.fail(symbol, str(exc))
            self.log(f"{symbol}: failed: {exc}")

    def _clean(self, symbol: str) -> None:
        result = clean_symbol(self.home, symbol, self.settings.rules)
        v = result.validated
        self.outcome.reject_counts[symbol] = v.reject_counts
        self.outcome.flag_counts[symbol] = v.flag_counts
        ts = v.clean.get_column("timestamp")
        self.outcome.materialized[CLEAN][symbol] = {
            "rows": v.clean.height,
            "first_date": str(ts.min())[:10],
            "last_date": str(ts.max())[:10],
            "rejected": int(v.rejects.height),
            "flagged": int(v.clean.get_column("flags").is_not_null().sum()),
            "outside_history_window": v.filtered_out,
            "path": result.path,
            "rejects_path": result.rejects_path,
            "preview": _preview(v.clean),
        }

    def _should_flush(self) -> bool:
        return bool(self._pending) and (
            len(self._pending) >= self.settings.load_batch_symbols
            or time.monotonic() - self._pending_since >= self.settings.load_batch_seconds
        )

    def _flush(self) -> None:
        if not self._pending:
            return
        assert self.duckdb is not None
        batch, self._pending = self._pending, {}
        try:
            with self.duckdb.write_connection() as conn:
                stats = upsert(conn, list(batch.values()))
                conn.close()  # checkpoint now, while the marker keeps readers away
                if stats.inserted or stats.updated:  # readers' caches stay valid otherwise
                    # Before the marker goes: if this process dies first, whoever removes its
                    # marker publishes instead (market_core.handoff).
                    self.duckdb.publish_version()
        except Exception as exc:  # the batch rolled back: every symbol in it failed to load
            for symbol in batch:
                self.outcome.fail(symbol, f"{symbol}: DuckDB upsert failed: {exc}")
            self.log(f"DuckDB upsert of {len(batch)} symbols failed and was rolled back: {exc}")
            return
        self.log(
            f"Upserted {stats.rows} bars of {len(batch)} symbols: {stats.inserted} new, "
            f"{stats.updated} revised, {stats.unchanged} unchanged"
        )
        for symbol, frame in batch.items():
            ts = frame.get_column("timestamp")
            self.outcome.materialized[OHLCV][symbol] = {
                "rows": frame.height,
                "first_date": str(ts.min())[:10],
                "last_date": str(ts.max())[:10],
                "table": "ohlcv_data",
                "database": str(self.duckdb.database),
                "batch_inserted": _stats_row(stats)["inserted"],
                "batch_revised": _stats_row(stats)["revised"],
            }

    def _progress(self, done: int, total: int, elapsed: float) -> None:
        left = total - done
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = left / rate if rate > 0 else 0.0
        self.log(
            f"progress: {done}/{total} symbols done, {left} left, "
            f"{len(self.outcome.failures)} failed, ~{eta:.0f}s to go at the current pace"
        )


def _stats_row(stats: LoadStats) -> dict[str, int]:
    return {"inserted": stats.inserted, "revised": stats.updated, "unchanged": stats.unchanged}
