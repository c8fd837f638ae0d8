"""The intraday runner: fetch and validate each symbol, then one load for all of them.

Same shape as the daily runner (``runs.batch``): a typed result per symbol and stage or the
symbol's failure, in a ``BatchOutcome``. An answer about the key (intraday refused to a free
key, a wrong key, a spent quota) stops the fetches that would only repeat it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import polars as pl

from market_core.assets import CLEAN_INTRADAY, INTRADAY, RAW_INTRADAY
from market_core.home import DataHome
from market_core.schema import INTRADAY_COLUMNS, INTRADAY_TABLE
from market_core.store import StoreWriter
from market_pipeline.bars.rules import Rules
from market_pipeline.intraday.stages import IntradayError, clean_intraday, fetch_raw_intraday
from market_pipeline.runs.outcome import (
    BatchOutcome,
    ErrorKind,
    IntradayCleaned,
    IntradayLoaded,
    NotAttempted,
    StageFailed,
    StageResult,
    SymbolFailure,
)
from market_pipeline.source.client import AlphaVantageClient
from market_pipeline.source.errors import (
    AlphaVantageError,
    DailyQuotaError,
    InvalidApiKeyError,
    PremiumOnlyError,
)

KEY_WIDE = (PremiumOnlyError, InvalidApiKeyError, DailyQuotaError)
"""Answers about the key: every later symbol would get the same."""
INTRADAY_STAGES = (RAW_INTRADAY, CLEAN_INTRADAY, INTRADAY)


@dataclass(frozen=True)
class IntradaySettings:
    interval: str
    extended: bool
    rules: Rules = field(default_factory=Rules)


def read_clean_intraday(home: DataHome, symbol: str, interval: str) -> pl.DataFrame:
    path = home.clean_intraday_file(symbol, interval)
    if not path.exists():
        raise IntradayError(f"{symbol}: no clean intraday data yet; materialize clean_intraday")
    try:
        return pl.read_parquet(path, columns=list(INTRADAY_COLUMNS))
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise IntradayError(f"{symbol}: cannot read {path}: {exc}") from exc


class IntradayRunner:
    """The intraday stages selected for a run and what they read and write."""

    def __init__(
        self,
        *,
        home: DataHome,
        client: AlphaVantageClient | None,
        store: StoreWriter | None,
        stages: Sequence[str],
        settings: IntradaySettings,
        log: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.home, self.client, self.store = home, client, store
        self.stages = [s for s in INTRADAY_STAGES if s in stages]
        self.settings, self.log = settings, log

    def run(self, symbols: Sequence[str]) -> BatchOutcome:
        return _Run(self).over(symbols)


class _Run:
    """One run's state: the results so far, and the clean bars waiting for the load."""

    def __init__(self, runner: IntradayRunner) -> None:
        self.runner, self.settings, self.log = runner, runner.settings, runner.log
        self.results: dict[str, dict[str, StageResult]] = {s: {} for s in runner.stages}
        self.failures: dict[str, SymbolFailure] = {}
        self.bars: dict[str, pl.DataFrame] = {}
        self.stop_reason: str | None = None

    def over(self, symbols: Sequence[str]) -> BatchOutcome:
        for symbol in symbols:
            if RAW_INTRADAY in self.results and not self._fetch(symbol):
                continue
            if CLEAN_INTRADAY in self.results:
                self._clean(symbol)
        if INTRADAY in self.results:
            self._load(symbols)
        return BatchOutcome(tuple(symbols), self.results, self.failures)

    def _failed(self, symbol: str, stage: str, exc: Exception) -> None:
        self.failures[symbol] = StageFailed.of(symbol, stage, exc)
        self.log(f"{symbol}: failed: {exc}")

    def _fetch(self, symbol: str) -> bool:
        """``raw_intraday`` for one symbol; False if the symbol failed or was not tried."""
        if self.stop_reason is not None:
            self.failures[symbol] = NotAttempted(symbol, RAW_INTRADAY, self.stop_reason)
            return False
        assert self.runner.client is not None
        interval = self.settings.interval
        try:
            raw = fetch_raw_intraday(
                self.runner.client,
                self.runner.home,
                symbol,
                interval,
                extended=self.settings.extended,
            )
        except KEY_WIDE as exc:
            self.stop_reason = str(exc)
            self._failed(symbol, RAW_INTRADAY, exc)
            return False
        except (AlphaVantageError, OSError) as exc:
            self._failed(symbol, RAW_INTRADAY, exc)
            return False
        self.results[RAW_INTRADAY][symbol] = raw
        self.log(f"{symbol}: {raw.rows} {interval} bars fetched")
        return True

    def _clean(self, symbol: str) -> None:
        settings = self.settings
        try:
            cleaned = clean_intraday(
                self.runner.home,
                symbol,
                settings.interval,
                extended=settings.extended,
                rules=settings.rules,
            )
        except (IntradayError, OSError) as exc:
            self._failed(symbol, CLEAN_INTRADAY, exc)
            return
        self.results[CLEAN_INTRADAY][symbol] = IntradayCleaned.of(cleaned)
        if INTRADAY in self.results:
            self.bars[symbol] = cleaned.bars

    def _load(self, symbols: Sequence[str]) -> None:
        """``intraday_data``: every symbol that has not failed, in one transaction."""
        store = self.runner.store
        assert store is not None
        frames: dict[str, pl.DataFrame] = {}
        for symbol in symbols:
            if symbol in self.failures:
                continue
            cleaned = self.bars.pop(symbol, None)
            try:
                frames[symbol] = (
                    cleaned
                    if cleaned is not None
                    else read_clean_intraday(self.runner.home, symbol, self.settings.interval)
                )
            except IntradayError as exc:
                self._failed(symbol, INTRADAY, exc)
        if not frames:
            return
        try:
            stats = store.load_intraday(list(frames.values()))
        except Exception as exc:  # the transaction rolled back: every symbol in it failed
            for symbol in frames:
                self.failures[symbol] = StageFailed(
                    symbol,
                    INTRADAY,
                    ErrorKind.LOAD,
                    f"{symbol}: the intraday load into {store.database} failed, nothing "
                    f"of the batch was stored: {type(exc).__name__}: {exc}",
                )
            return
        self.log(
            f"Upserted {stats.rows} {self.settings.interval} bars: {stats.inserted} new, "
            f"{stats.updated} revised, {stats.unchanged} unchanged"
        )
        for symbol, frame in frames.items():
            self.results[INTRADAY][symbol] = IntradayLoaded(
                symbol, frame.height, INTRADAY_TABLE, stats.inserted, stats.updated
            )
