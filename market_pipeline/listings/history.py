"""What the daily path left on disk that the listing's plan reads: when each symbol's bars
were last fetched (``raw_data``'s ``fetched_at``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import polars as pl

from market_core.home import DataHome


def raw_fetched_at(home: DataHome, symbols: Iterable[str]) -> dict[str, dt.datetime]:
    """Each symbol's newest ``fetched_at`` in its raw file; a symbol without a readable file
    is left out. One scan over all the files (about 0.4 ms a file)."""
    paths = {str(home.raw_file(s)): s for s in symbols if home.raw_file(s).exists()}
    if not paths:
        return {}
    try:
        found = (
            pl.scan_parquet(list(paths), include_file_paths="path")
            .group_by("path")
            .agg(pl.col("fetched_at").max())
            .collect()
        )
    except (pl.exceptions.PolarsError, OSError):
        return {}  # a damaged file: no symbol counts as complete, the fetch finds it
    return {paths[path]: at for path, at in found.iter_rows() if at is not None}
