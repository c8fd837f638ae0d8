"""The one rule for a ticker symbol, shared by the watchlist, ``MARKET_SYMBOLS``, the sensor and
the API, so that a symbol the API refuses can never be loaded by the pipeline either.

ASCII is checked before upper-casing: ``str.upper()`` turns some other letters into another
ticker (the dotless i into ``I``, the sharp s into ``SS``, the long s into ``S``, the ff
ligature into ``FF``), so a dotless ``ibm`` would otherwise load IBM.
"""

from __future__ import annotations

import re

SYMBOL_PATTERN = r"^[A-Z0-9][A-Z0-9.\-]{0,11}$"
"""A symbol as stored: upper-case letters, digits, dot and dash (BRK.B, RDS-A), at most 12."""

SYMBOL_RULE = "1-12 ASCII letters, digits, '.' or '-', starting with a letter or digit"

_SYMBOL = re.compile(SYMBOL_PATTERN)


class InvalidSymbolError(ValueError):
    """Text that cannot be a ticker symbol; the message names it."""


def normalize_symbol(text: str) -> str:
    """``text`` as a stored symbol (stripped, upper-case), or ``InvalidSymbolError``."""
    stripped = text.strip()
    symbol = stripped.upper()
    if not stripped.isascii() or not _SYMBOL.fullmatch(symbol):
        raise InvalidSymbolError(f"{text!r} is not a ticker symbol: {SYMBOL_RULE}")
    return symbol
