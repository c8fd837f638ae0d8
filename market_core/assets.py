"""The asset keys of the graph, the names the pipeline, its orchestration and tests share."""

from __future__ import annotations

RAW = "raw_data"
CLEAN = "clean_data"
OHLCV = "ohlcv_data"
STAGES: tuple[str, ...] = (RAW, CLEAN, OHLCV)
"""In the order the data flows."""
