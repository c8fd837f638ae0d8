"""What a symbol has stored, and the comparisons the guarantees are made of.

Each check returns a list of broken guarantees (empty when all hold) rather than asserting, so a
matrix test can report every broken guarantee of every fault at once.
"""

from __future__ import annotations

import datetime as dt
import io
from collections import Counter
from dataclasses import dataclass
from typing import cast

import polars as pl

from market_core.home import DataHome
from tests.pipeline.helpers import table_rows

Row = tuple[object, ...]


@dataclass(frozen=True)
class Stored:
    """Everything of one symbol: its three files, byte for byte, and its DuckDB rows."""

    files: dict[str, bytes | None]
    rows: dict[dt.datetime, Row]

    @classmethod
    def of(cls, home: DataHome, symbol: str) -> Stored:
        paths = {"raw": home.raw_file(symbol), "clean": home.clean_file(symbol),
                 "rejects": home.rejects_file(symbol)}  # fmt: skip
        files = {name: p.read_bytes() if p.exists() else None for name, p in paths.items()}
        rows = {cast(dt.datetime, row[0]): row for row in table_rows(home, symbol)}
        return cls(files, rows)

    def clean_dates(self) -> Counter[str]:
        """How often each date (YYYY-MM-DD) is in the clean file."""
        data = self.files["clean"]
        if data is None:
            return Counter()
        dates = pl.read_parquet(io.BytesIO(data)).get_column("timestamp").dt.date()
        return Counter(str(d) for d in dates)

    def rejects(self) -> Counter[tuple[str, str]]:
        """(timestamp as received, reason) of each rejected row."""
        data = self.files["rejects"]
        if data is None:
            return Counter()
        frame = pl.read_parquet(io.BytesIO(data))
        return Counter(frame.select("timestamp", "reason").iter_rows())


def unchanged(label: str, before: Stored, after: Stored) -> list[str]:
    """Files byte for byte and DuckDB rows exactly as before."""
    problems = [f"{label}: {name} file changed" for name in before.files
                if before.files[name] != after.files[name]]  # fmt: skip
    if before.rows != after.rows:
        problems.append(f"{label}: DuckDB rows changed")
    return problems


def stored_bars_kept(label: str, before: Stored, after: Stored) -> list[str]:
    """No stored bar was deleted or given other values; new bars may have been added."""
    lost = [ts for ts in before.rows if ts not in after.rows]
    altered = [ts for ts in before.rows if ts in after.rows and after.rows[ts] != before.rows[ts]]
    problems = []
    if lost:
        problems.append(f"{label}: {len(lost)} stored bars deleted, first {min(lost)}")
    if altered:
        problems.append(f"{label}: {len(altered)} stored bars overwritten, first {min(altered)}")
    return problems


def added_rejects(before: Stored, after: Stored) -> list[tuple[str, str]]:
    """Rejected rows of the latest answer that the earlier answer did not have."""
    return sorted((after.rejects() - before.rejects()).elements())
