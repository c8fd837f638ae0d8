"""The asset keys of the graph, the names the pipeline, its orchestration and tests share."""

from __future__ import annotations

RAW = "raw_data"
CLEAN = "clean_data"
OHLCV = "ohlcv_data"
RAW_ACTIONS = "raw_actions"
"""Alpha Vantage's SPLITS and DIVIDENDS answers as received."""
ACTIONS = "corporate_actions"
"""The validated events in the DuckDB table ``corporate_actions``."""
STAGES: tuple[str, ...] = (RAW, CLEAN, OHLCV)
"""The price stages, in the order the data flows."""
RAW_INTRADAY = "raw_intraday"
"""Alpha Vantage's TIME_SERIES_INTRADAY answers as received (ALPHAVANTAGE_INTRADAY_INTERVAL)."""
CLEAN_INTRADAY = "clean_intraday"
INTRADAY = "intraday_data"
"""The validated intraday bars in the DuckDB table ``ohlcv_intraday``."""
INTRADAY_STAGES: tuple[str, ...] = (RAW_INTRADAY, CLEAN_INTRADAY, INTRADAY)
