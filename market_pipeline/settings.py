"""Every knob of the pipeline, read from the environment in one place.

Defaults work offline: with no ``ALPHAVANTAGE_API_KEY`` the bundled sample source answers in
Alpha Vantage's wire format. The README lists each variable.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from market_core.env import SettingsError, env_int
from market_core.home import DataHome

DEFAULT_BASE_URL = "https://www.alphavantage.co/query"
DEFAULT_WATCHLIST = Path(__file__).with_name("watchlist.txt")
OutputSize = Literal["compact", "full", "auto"]


def _outputsize() -> OutputSize:
    raw = os.environ.get("ALPHAVANTAGE_OUTPUTSIZE", "").strip().lower() or "auto"
    if raw not in ("compact", "full", "auto"):
        raise SettingsError(f"ALPHAVANTAGE_OUTPUTSIZE must be compact, full or auto, got {raw!r}")
    return raw  # type: ignore[return-value]


def _history_start() -> dt.date | None:
    raw = os.environ.get("MARKET_HISTORY_START", "").strip()
    if not raw:
        return None
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise SettingsError(f"MARKET_HISTORY_START must be an ISO date, got {raw!r}") from None


@dataclass(frozen=True)
class Settings:
    home: DataHome
    api_key: str | None
    base_url: str
    requests_per_second: int
    requests_per_minute: int
    requests_per_day: int
    outputsize: OutputSize
    history_start: dt.date | None
    watchlist_path: Path
    symbols_override: tuple[str, ...] | None

    @classmethod
    def from_env(cls) -> Settings:
        symbols = os.environ.get("MARKET_SYMBOLS", "").strip()
        return cls(
            home=DataHome.from_env(),
            api_key=os.environ.get("ALPHAVANTAGE_API_KEY", "").strip() or None,
            base_url=os.environ.get("ALPHAVANTAGE_BASE_URL", "").strip() or DEFAULT_BASE_URL,
            requests_per_second=env_int(os.environ, "ALPHAVANTAGE_REQUESTS_PER_SECOND", 1),
            requests_per_minute=env_int(os.environ, "ALPHAVANTAGE_REQUESTS_PER_MINUTE", 5),
            requests_per_day=env_int(os.environ, "ALPHAVANTAGE_REQUESTS_PER_DAY", 25),
            outputsize=_outputsize(),
            history_start=_history_start(),
            watchlist_path=Path(os.environ.get("MARKET_WATCHLIST", "") or DEFAULT_WATCHLIST),
            symbols_override=tuple(s for s in symbols.split(",") if s.strip()) if symbols else None,
        )
