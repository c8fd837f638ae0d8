"""The original design's loader: pandas per symbol, then ``INSERT ... ON CONFLICT DO NOTHING``.

Two variants, both over the same raw Parquet files and into the same table as ours:

* ``bulk``: the pandas frame of a symbol goes in with one ``INSERT ... SELECT ... FROM frame
  ON CONFLICT DO NOTHING`` (DuckDB scans the frame). The strongest reading of the design, and the
  baseline the goal is judged against.
* ``rows``: one parameterized ``INSERT ... VALUES (?, ...) ON CONFLICT DO NOTHING`` per row
  (``executemany``), as the design was written. At a few milliseconds per row it is measured on
  a few symbols only and reported in rows/s.

The transform is what such code typically does: numeric and date conversion, drop incomplete
and impossible rows, drop repeated dates, sort.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.datagen import connect
from market_core.schema import COLUMNS, CREATE_TABLE_SQL, TABLE

_PRICES = ["open", "high", "low", "close"]
BULK_SQL = (
    f"INSERT INTO {TABLE} SELECT {', '.join(COLUMNS)} FROM frame "
    "ON CONFLICT (symbol, timestamp) DO NOTHING"
)
ROW_SQL = (
    f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))}) "
    "ON CONFLICT (symbol, timestamp) DO NOTHING"
)


def transform(raw: pd.DataFrame) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "timestamp": pd.to_datetime(raw["date"], format="%Y-%m-%d", errors="coerce"),
            "symbol": raw["symbol"].str.strip().str.upper(),
            **{c: pd.to_numeric(raw[c], errors="coerce") for c in [*_PRICES, "volume"]},
        }
    )
    frame = frame.dropna()
    ok = (frame[_PRICES] > 0).all(axis=1) & (frame["volume"] >= 0)
    ok &= frame["high"] >= frame[["open", "close", "low"]].max(axis=1)
    ok &= frame["low"] <= frame[["open", "close", "high"]].min(axis=1)
    frame = frame[ok].drop_duplicates(subset=["timestamp"], keep="first")
    frame["volume"] = frame["volume"].astype("int64")
    return frame.sort_values("timestamp")[list(COLUMNS)]


def load(database: Path, raw_files: list[Path], variant: str, max_rows: int | None = None) -> int:
    """Load ``raw_files`` (at most ``max_rows`` rows) into a new table; return the rows offered."""
    offered = 0
    with connect(database) as conn:
        conn.execute(CREATE_TABLE_SQL)
        for path in raw_files:
            frame = transform(pd.read_parquet(path))
            if max_rows is not None:
                frame = frame.head(max_rows - offered)
            offered += len(frame)
            if variant == "bulk":
                conn.register("frame", frame)
                conn.execute(BULK_SQL)
                conn.unregister("frame")
            else:
                conn.executemany(ROW_SQL, list(frame.itertuples(index=False, name=None)))
    return offered
