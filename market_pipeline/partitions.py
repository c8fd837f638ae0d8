"""The symbol partitions and the watchlist that feeds them.

One dynamic partitions definition is shared by all three assets, so adding a symbol is a write to
the instance (by ``make ingest`` or the watchlist sensor), never a code change.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from dagster import DynamicPartitionsDefinition

from market_core.schema import SYMBOL_PATTERN
from market_pipeline.settings import Settings

symbols_partitions = DynamicPartitionsDefinition(name="symbols")

_SYMBOL_RE = re.compile(SYMBOL_PATTERN)


class InvalidSymbolError(ValueError):
    """A watchlist entry that cannot be a ticker symbol."""


def normalize_symbol(text: str) -> str:
    symbol = text.strip().upper()
    if not _SYMBOL_RE.fullmatch(symbol):
        raise InvalidSymbolError(
            f"{text!r} is not a ticker symbol (letters, digits, '.', '-'; at most 12 characters)"
        )
    return symbol


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
