"""Reading many small Parquet files at once.

A read per file costs a fixed ~0.5 ms of CPU on top of its bytes: for a daily update's files of
100 bars that is nearly all of it. One scan over all of them costs a third as much and uses
every core. It fails as a whole if one file does, so the callers then read file by file to find
which one it was, and fail that symbol alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import polars as pl


def read_many(paths: Mapping[str, Path], columns: Sequence[str]) -> dict[str, pl.DataFrame] | None:
    """Each key's frame, read in one scan; ``None`` if any file could not be read."""
    if not paths:
        return {}
    keys = {str(path): key for key, path in paths.items()}
    try:
        stacked = (
            pl.scan_parquet(list(keys), include_file_paths="_path")
            .select(*columns, "_path")
            .collect(engine="in-memory")
        )
    except (pl.exceptions.PolarsError, OSError):
        return None
    parts = stacked.partition_by("_path", as_dict=True, include_key=False)
    frames = {keys[str(path)]: frame for (path,), frame in parts.items()}
    empty = stacked.clear().drop("_path")  # a file without a row has no part
    return {key: frames.get(key, empty) for key in paths}
