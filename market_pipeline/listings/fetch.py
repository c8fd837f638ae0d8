"""Stage 1 of ``listings``: the two LISTING_STATUS answers (active, delisted), as received.

Every field stays the string the vendor sent, with the row's place in the answer, its field
count (a short or long row is kept as sent, its rule says what is wrong) and where from (never
the key) and when. The files under ``raw/listings/`` are written only after both answers passed
the answer checks (``clean``) and were loaded, so they always hold the last good listing, the
one the table was last loaded from.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import polars as pl

from market_core.home import DataHome
from market_pipeline.source.client import (
    LISTING_STATES,
    AlphaVantageClient,
    FetchedListing,
    ListingState,
)
from market_pipeline.store.files import write_parquet_atomic

CONTEXT_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "extra": pl.String,
    "fields": pl.Int32,
    "row": pl.Int32,
    "state": pl.String,
    "source": pl.String,
    "fetched_at": pl.Datetime("us", "UTC"),
}
"""Beside the answer's own columns: the fields past the header's (comma-joined, null for
none), the row's field count and its place after the header (1 = the first row)."""


def raw_frame(fetched: FetchedListing) -> pl.DataFrame:
    """The answer's rows in the order received, every field a string (null if the row is
    short). A column the vendor adds later is kept too, as one more string column."""
    first: dict[str, int] = {}  # a name the header repeats: its first column
    for i, name in enumerate(fetched.header):
        first.setdefault(name, i)
    width = len(fetched.header)
    rows = fetched.rows
    columns: dict[str, list[Any]] = {
        name: [row[i] if i < len(row) else None for row in rows] for name, i in first.items()
    }
    names = list(columns)
    n = len(rows)
    columns |= {
        "extra": [",".join(row[width:]) if len(row) > width else None for row in rows],
        "fields": [len(row) for row in rows],
        "row": list(range(1, n + 1)),
        "state": [fetched.state] * n,
        "source": [fetched.source] * n,
        "fetched_at": [fetched.fetched_at] * n,
    }
    return pl.DataFrame(columns, schema={**dict.fromkeys(names, pl.String), **CONTEXT_SCHEMA})


def fetch_listings(client: AlphaVantageClient) -> dict[ListingState, pl.DataFrame]:
    """Both answers, active first: two calls on the client's permits, retries and errors."""
    return {state: raw_frame(client.fetch_listing_status(state)) for state in LISTING_STATES}


def read_raw(home: DataHome, state: ListingState) -> pl.DataFrame | None:
    """The last good answer of ``state``, or ``None`` if there is none (or it is unreadable)."""
    path = home.raw_listings_file(state)
    try:
        return pl.read_parquet(path) if path.exists() else None
    except (pl.exceptions.PolarsError, OSError):
        return None


def stored_rows(home: DataHome) -> dict[ListingState, int]:
    """How many rows each last good answer held (missing: none stored)."""
    found = {state: read_raw(home, state) for state in LISTING_STATES}
    return {state: frame.height for state, frame in found.items() if frame is not None}


def last_fetched(home: DataHome) -> dt.datetime | None:
    """When the last good listing was fetched (the older of its two answers), or ``None``
    before the first one. Reads one column of each file: the sensors ask every minute."""
    times = []
    for state in LISTING_STATES:
        path = home.raw_listings_file(state)
        try:
            first = pl.scan_parquet(path).select(pl.col("fetched_at").min()).collect().item()
        except (pl.exceptions.PolarsError, OSError):
            return None
        if first is None:
            return None
        times.append(first)
    return min(times)


def write_answers(
    home: DataHome,
    raws: Mapping[ListingState, pl.DataFrame],
    rejects: Mapping[ListingState, pl.DataFrame],
) -> dict[str, str]:
    """Each answer under ``raw/listings/`` and its rejects (also when there are none, so the
    file describes the latest answer) under ``rejects/listings/``; the paths written."""
    paths: dict[str, str] = {}
    for state, raw in raws.items():
        raw_path, rejects_path = home.raw_listings_file(state), home.listings_rejects_file(state)
        write_parquet_atomic(raw, raw_path)
        write_parquet_atomic(rejects[state], rejects_path)
        paths |= {f"raw_{state}": str(raw_path), f"rejects_{state}": str(rejects_path)}
    return paths
