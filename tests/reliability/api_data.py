"""A data home for abusing the API: symbols that tempt a careless parser, bars naming their owner.

Symbols come in confusable groups: prefixes and LIKE wildcards (``AAP``/``AAPL``), regex dots
(``BRK.B``/``BRK-B``/``BRKB``), and what ``str.upper()`` makes of some non-ASCII letters
(dotless i -> ``I``, sharp s -> ``SS``, the ff ligature -> ``FF``, long s -> ``S``). Every
price of a symbol lies in its own band of ten (``owners``), daily or aggregated, so any response
can be checked for data of a symbol it did not ask for. Loaded with the pipeline's own writer
(``DuckDBFileStore.load``: write lock, upsert, data version).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import polars as pl

from market_core.home import DataHome
from market_pipeline.store.duckdb_file import DuckDBFileStore

SYMBOLS = ("AAPL", "AAP", "IBM", "I", "BRK.B", "BRK-B", "BRKB", "SPY", "SSPY", "SS", "S", "FF")
DAYS = 300
FIRST_DAY = dt.date(2023, 1, 2)
BAND = 10.0


def frame() -> pl.DataFrame:
    rows = []
    for number, symbol in enumerate(SYMBOLS, start=1):
        for i in range(DAYS):
            day = FIRST_DAY + dt.timedelta(days=i)
            price = BAND * number + 2 + i / 200  # stays inside [BAND * number, BAND * (number + 1))
            rows.append((dt.datetime.combine(day, dt.time()), symbol, price, price + 1,
                         price - 1, price + 0.5, 1_000 + i))  # fmt: skip
    return pl.DataFrame(
        rows,
        schema=["timestamp", "symbol", "open", "high", "low", "close", "volume"],
        orient="row",
    )


def build(home: DataHome) -> None:
    DuckDBFileStore(database=str(home.duckdb_path)).load([frame()])


def owners(prices: Iterable[float]) -> set[str]:
    """The symbols whose bands the prices fall in."""
    return {SYMBOLS[int(p // BAND) - 1] for p in prices}
