"""The symbol partitions, the watchlist that feeds them, and how runs address them.

One dynamic partitions definition is shared by all three assets, so adding a symbol is a write to
the instance (by ``make ingest`` or the watchlist sensor), never a code change. A run covers one
contiguous range of the registered symbols (dynamic partitions can only be run as key ranges), so
every caller that wants some symbols groups them into as few ranges as the registered order
allows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from dagster import DynamicPartitionsDefinition

from market_core.symbols import normalize_symbol
from market_pipeline.settings import Settings

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


def watchlist(settings: Settings) -> list[str]:
    """``MARKET_SYMBOLS`` if set, else the watchlist file."""
    if settings.symbols_override is not None:
        return parse_symbols(settings.symbols_override)
    return parse_symbols(settings.watchlist_path.read_text(encoding="utf-8").splitlines())


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


def range_tags(block: Sequence[str]) -> dict[str, str]:
    """The tags that make a run cover the partition range ``block[0]..block[-1]``."""
    return {
        "dagster/asset_partition_range_start": block[0],
        "dagster/asset_partition_range_end": block[-1],
    }
