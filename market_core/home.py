"""Paths inside one data home.

Every piece of state of one data home lives below one folder (``MARKET_DATA_HOME``, default
``./storage``) so that two homes never interfere: Parquet, rejects, the DuckDB file, its data
version, the rate limiter's bucket and, unless ``DAGSTER_HOME`` is set, the Dagster instance.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOME = "./storage"


@dataclass(frozen=True)
class DataHome:
    root: Path

    @classmethod
    def from_env(cls) -> DataHome:
        return cls(Path(os.environ.get("MARKET_DATA_HOME") or DEFAULT_HOME).resolve())

    @property
    def raw_dir(self) -> Path:
        return self.root / "raw"

    @property
    def clean_dir(self) -> Path:
        return self.root / "clean"

    @property
    def rejects_dir(self) -> Path:
        return self.root / "rejects"

    @property
    def duckdb_path(self) -> Path:
        return self.root / "market_data.duckdb"

    @property
    def version_path(self) -> Path:
        """The data-version record: rewritten (atomically) by loaders, stat-ed by readers."""
        return self.root / "market_data.version"

    @property
    def writers_dir(self) -> Path:
        """Home of the DuckDB write lock, held by a loader while it writes (see ``handoff``)."""
        return self.root / ".duckdb-writers"

    @property
    def state_dir(self) -> Path:
        """Small files the pipeline keeps between runs: limiter bucket, API-key facts."""
        return self.root / "state"

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster"

    def raw_file(self, symbol: str) -> Path:
        return self.raw_dir / f"{symbol}.parquet"

    def clean_file(self, symbol: str) -> Path:
        return self.clean_dir / f"{symbol}.parquet"

    def rejects_file(self, symbol: str) -> Path:
        return self.rejects_dir / f"{symbol}.parquet"

    @property
    def raw_actions_dir(self) -> Path:
        """Alpha Vantage's SPLITS and DIVIDENDS answers as received, one folder per function."""
        return self.root / "raw_actions"

    def raw_actions_file(self, symbol: str, function: str) -> Path:
        """``function`` is ``splits`` or ``dividends``."""
        return self.raw_actions_dir / function / f"{symbol}.parquet"

    @property
    def actions_rejects_dir(self) -> Path:
        """Corporate-action rows that broke a rule, with the rule (beside ``rejects/`` for bars)."""
        return self.root / "rejects_actions"

    def actions_rejects_file(self, symbol: str) -> Path:
        return self.actions_rejects_dir / f"{symbol}.parquet"
