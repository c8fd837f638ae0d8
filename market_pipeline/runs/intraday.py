"""One intraday run over many symbols: fetch, validate, then one load for all of them.

A symbol is the unit of failure, as in the daily batch: a bad answer, a file that cannot be
read or an answer without a valid bar fails that symbol, and the others still load. Some
answers are about the key, not the symbol, and stop the fetches that would only repeat them: a
refused endpoint (a free key: intraday is premium), a wrong key, a used-up daily quota. The
load is one transaction (``StoreWriter.load_intraday``): if it fails, none of the batch is
stored and every symbol in it fails with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import polars as pl

from market_core.assets import CLEAN_INTRADAY, INTRADAY, RAW_INTRADAY
from market_core.home import DataHome
from market_core.schema import INTRADAY_COLUMNS
from market_core.store import LoadStats, StoreWriter
from market_pipeline.bars.rules import Rules
from market_pipeline.intraday.stages import (
    CleanIntraday,
    IntradayError,
    RawIntraday,
    clean_intraday,
    fetch_raw_intraday,
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


@dataclass(frozen=True)
class IntradaySettings:
    interval: str
    extended: bool
    rules: Rules = field(default_factory=Rules)


@dataclass
class IntradayOutcome:
    symbols: list[str]
    raw: dict[str, RawIntraday] = field(default_factory=dict)
    clean: dict[str, CleanIntraday] = field(default_factory=dict)
    loaded: dict[str, int] = field(default_factory=dict)
    """Bars offered to the table per symbol."""
    stats: LoadStats | None = None
    failures: dict[str, str] = field(default_factory=dict)
    stopped_by: str | None = None
    """The key-wide answer that stopped the fetches (the premium refusal), if any."""
    refused: bool = False


def read_clean_intraday(home: DataHome, symbol: str, interval: str) -> pl.DataFrame:
    path = home.clean_intraday_file(symbol, interval)
    if not path.exists():
        raise IntradayError(f"{symbol}: no clean intraday data yet; materialize clean_intraday")
    try:
        return pl.read_parquet(path, columns=list(INTRADAY_COLUMNS))
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise IntradayError(f"{symbol}: cannot read {path}: {exc}") from exc


class IntradayRun:
    def __init__(
        self,
        *,
        home: DataHome,
        client: AlphaVantageClient | None,
        store: StoreWriter | None,
        stages: set[str],
        settings: IntradaySettings,
        log: Callable[[str], None] = lambda _: None,
    ) -> None:
        self._home, self._client, self._store = home, client, store
        self._stages, self._settings, self._log = stages, settings, log

    def over(self, symbols: Sequence[str]) -> IntradayOutcome:
        outcome = IntradayOutcome(list(symbols))
        for symbol in symbols:
            if RAW_INTRADAY in self._stages and not self._fetch(outcome, symbol):
                continue
            if CLEAN_INTRADAY in self._stages:
                self._clean(outcome, symbol)
        if INTRADAY in self._stages:
            self._load(outcome)
        return outcome

    def _fetch(self, outcome: IntradayOutcome, symbol: str) -> bool:
        if outcome.stopped_by is not None:
            outcome.failures[symbol] = f"{symbol}: not fetched: {outcome.stopped_by}"
            return False
        if self._client is None:
            raise ValueError("raw_intraday selected without an Alpha Vantage client")
        settings = self._settings
        try:
            outcome.raw[symbol] = fetch_raw_intraday(
                self._client, self._home, symbol, settings.interval, extended=settings.extended
            )
        except KEY_WIDE as exc:
            outcome.failures[symbol] = str(exc)
            outcome.stopped_by = str(exc)
            outcome.refused = isinstance(exc, PremiumOnlyError)
            return False
        except (AlphaVantageError, OSError) as exc:
            outcome.failures[symbol] = str(exc)
            return False
        self._log(f"{symbol}: {outcome.raw[symbol].rows} {settings.interval} bars fetched")
        return True

    def _clean(self, outcome: IntradayOutcome, symbol: str) -> None:
        settings = self._settings
        try:
            outcome.clean[symbol] = clean_intraday(
                self._home,
                symbol,
                settings.interval,
                extended=settings.extended,
                rules=settings.rules,
            )
        except (IntradayError, OSError) as exc:
            outcome.failures[symbol] = str(exc)

    def _load(self, outcome: IntradayOutcome) -> None:
        if self._store is None:
            raise ValueError("intraday_data selected without a store")
        frames: dict[str, pl.DataFrame] = {}
        for symbol in outcome.symbols:
            if symbol in outcome.failures:
                continue
            cleaned = outcome.clean.get(symbol)
            try:
                frames[symbol] = (
                    cleaned.bars
                    if cleaned is not None
                    else read_clean_intraday(self._home, symbol, self._settings.interval)
                )
            except IntradayError as exc:
                outcome.failures[symbol] = str(exc)
        if not frames:
            return
        try:
            outcome.stats = self._store.load_intraday(list(frames.values()))
        except Exception as exc:
            for symbol in frames:
                outcome.failures[symbol] = (
                    f"{symbol}: the intraday load into {self._store.database} failed, nothing "
                    f"of the batch was stored: {type(exc).__name__}: {exc}"
                )
            return
        outcome.loaded = {symbol: frame.height for symbol, frame in frames.items()}
