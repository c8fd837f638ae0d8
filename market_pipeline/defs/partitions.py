"""The symbol partitions, the watchlist that feeds them, and how runs address them.

One dynamic partitions definition is shared by all three assets, so adding a symbol is a write to
the instance (by ``make ingest`` or the watchlist sensor), never a code change. A run covers one
contiguous range of the registered symbols (dynamic partitions can only be run as key ranges), so
every caller that wants some symbols groups them into as few ranges as the registered order
allows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from dagster import ConfigurableResource, DynamicPartitionsDefinition
from pydantic import Field, field_validator

from market_core.symbols import normalize_symbol
from market_pipeline.defs.settings import (
    UNIVERSE_VAR,
    env_fields,
    is_unresolved,
    parse_universe,
    stripped_or,
)
from market_pipeline.listings.plan import REFRESH_DAYS
from market_pipeline.listings.universe import Universe

DEFAULT_WATCHLIST = Path(__file__).resolve().parents[1] / "watchlist.txt"

symbols_partitions = DynamicPartitionsDefinition(name="symbols")
PARTITIONS = symbols_partitions.name or "symbols"


def parse_symbols(entries: Iterable[str]) -> list[str]:
    """Normalized, de-duplicated symbols in their first-seen order."""
    seen: dict[str, None] = {}
    for entry in entries:
        text = entry.split("#", 1)[0].strip()
        if text:
            seen.setdefault(normalize_symbol(text), None)
    return list(seen)


class WatchlistResource(ConfigurableResource):
    """What the pipeline follows: which symbols, and their bars from which day on.

    The watchlist sensor, ``make ingest`` and the op read it, so they agree on both.
    """

    ENV: ClassVar[dict[str, str]] = {
        "symbols": "MARKET_SYMBOLS",
        "path": "MARKET_WATCHLIST",
        "history_start": "MARKET_HISTORY_START",
        "universe": UNIVERSE_VAR,
        "listings_refresh_days": "MARKET_LISTINGS_REFRESH_DAYS",
    }

    symbols: str | None = Field(
        default=None, description="MARKET_SYMBOLS: comma-separated; overrides the file."
    )
    path: str = Field(
        default=str(DEFAULT_WATCHLIST), description="MARKET_WATCHLIST: one symbol per line."
    )
    history_start: str | None = Field(
        default=None,
        description="MARKET_HISTORY_START: ISO date; older bars are not kept (unset = all).",
    )

    universe: str | None = Field(
        default=None,
        description="MARKET_UNIVERSE: the listings whose symbols are followed beside the "
        "watchlist, e.g. exchange=NYSE,NASDAQ;asset_type=Stock;status=active (unset = the "
        "watchlist alone).",
    )
    listings_refresh_days: int = Field(
        default=REFRESH_DAYS,
        description="MARKET_LISTINGS_REFRESH_DAYS: with a universe, LISTING_STATUS is fetched "
        "on the first run, then again once the listing is this many days old (0 = only by hand).",
    )

    @classmethod
    def from_env(cls, **overrides: Any) -> WatchlistResource:
        return cls(**{**env_fields(cls, cls.ENV), **overrides})

    @field_validator("symbols", mode="before")
    @classmethod
    def _symbols(cls, value: object) -> object:
        return stripped_or(value, None)

    @field_validator("history_start", mode="before")
    @classmethod
    def _history_start(cls, value: object) -> object:
        if not isinstance(value, str) or is_unresolved(value):
            return value
        text = value.strip()
        try:
            return dt.date.fromisoformat(text).isoformat() if text else None
        except ValueError:
            raise ValueError(
                "MARKET_HISTORY_START (history_start) must be an ISO date such as 2020-01-31, "
                f"got {value!r}"
            ) from None

    @field_validator("universe", mode="before")
    @classmethod
    def _universe(cls, value: object) -> object:
        value = stripped_or(value, None)
        if isinstance(value, str) and not is_unresolved(value):
            parse_universe(value)
        return value

    @field_validator("listings_refresh_days")
    @classmethod
    def _refresh_days(cls, value: int) -> int:
        if value < 0:
            raise ValueError(
                "MARKET_LISTINGS_REFRESH_DAYS (listings_refresh_days) must be 0 (only by hand) "
                f"or more, got {value}"
            )
        return value

    def selection(self) -> Universe | None:
        """The universe ``MARKET_UNIVERSE`` selects, or ``None`` when it is unset."""
        return parse_universe(self.universe) if self.universe else None

    def wanted(self) -> list[str]:
        """``MARKET_SYMBOLS`` if set, else the watchlist file.

        Raises ``InvalidSymbolError`` for an entry that is no ticker, ``OSError`` for the file.
        """
        if self.symbols is not None:
            return parse_symbols(self.symbols.split(","))
        return parse_symbols(Path(self.path).read_text(encoding="utf-8").splitlines())

    def start_date(self) -> dt.date | None:
        return dt.date.fromisoformat(self.history_start) if self.history_start else None


def contiguous_blocks(registered: Sequence[str], wanted: set[str]) -> list[list[str]]:
    """Maximal runs of consecutive registered keys that are all wanted."""
    blocks: list[list[str]] = []
    current: list[str] = []
    for key in registered:
        if key in wanted:
            current.append(key)
        elif current:
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    return blocks


RUN_MIN_SYMBOLS = 25
"""The fewest symbols a backfill's run gets when it is split across Celery workers: below
that, a run's own start-up (a few seconds of process and instance work) outweighs the
parallelism."""


def split_block(block: Sequence[str], places: int) -> list[list[str]]:
    """``block`` cut into at most ``places`` contiguous ranges of near-equal size (each of
    at least ``RUN_MIN_SYMBOLS`` keys), so that as many runs as there are workers' places
    share a backfill. Each range is still a partition range a run can cover."""
    parts = max(1, min(places, len(block) // RUN_MIN_SYMBOLS))
    size, extra = divmod(len(block), parts)
    ranges, start = [], 0
    for index in range(parts):
        end = start + size + (1 if index < extra else 0)
        ranges.append(list(block[start:end]))
        start = end
    return ranges


def range_tags(block: Sequence[str]) -> dict[str, str]:
    """The tags that make a run cover the partition range ``block[0]..block[-1]``."""
    return {
        "dagster/asset_partition_range_start": block[0],
        "dagster/asset_partition_range_end": block[-1],
    }
