"""Paths inside one data home: every piece of a home's state lives below one folder, so two
homes never interfere; stage hand-off Parquet moves to ``MARKET_SHARED_HOME`` when it is set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from market_core.env import SettingsError

DEFAULT_HOME = "./storage"
DATA_HOME_VAR = "MARKET_DATA_HOME"
SHARED_HOME_VAR = "MARKET_SHARED_HOME"


@dataclass(frozen=True)
class DataHome:
    root: Path
    shared: Path | None = None
    """The folder every machine sees (``MARKET_SHARED_HOME``); None keeps it all under ``root``."""
    shared_url: str | None = None
    """``MARKET_SHARED_HOME`` when it is an object-store URL: the lake's files may live there
    (DuckDB reads them), the Parquet between stages may not (see ``shared_root``)."""

    @classmethod
    def from_env(cls, root: Path | None = None) -> DataHome:
        """This machine's data home, and the shared folder if ``MARKET_SHARED_HOME`` names one.

        ``root`` stands in for ``MARKET_DATA_HOME`` where a resource was configured with the
        path: the shared folder still comes from the environment of the process running the
        step, so each machine may mount it where it likes.
        """
        if root is None:
            root = Path(os.environ.get(DATA_HOME_VAR) or DEFAULT_HOME).resolve()
        raw = os.environ.get(SHARED_HOME_VAR, "").strip()
        if "://" in raw:
            return cls(root, None, raw)
        return cls(root, shared_from_env())

    @property
    def shared_root(self) -> Path:
        """Where the Parquet between stages lives: the shared folder, else the data home.

        A URL fails here, where a stage is about to write, not at start-up: an API replica
        reading a lake in an object store has no Parquet to write.
        """
        if self.shared_url is not None:
            raise SettingsError(_url_refused(self.shared_url))
        return self.root if self.shared is None else self.shared

    @property
    def raw_dir(self) -> Path:
        return self.shared_root / "raw"

    @property
    def clean_dir(self) -> Path:
        return self.shared_root / "clean"

    @property
    def rejects_dir(self) -> Path:
        return self.shared_root / "rejects"

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
        return self.shared_root / "raw_actions"

    def raw_actions_file(self, symbol: str, function: str) -> Path:
        """``function`` is ``splits`` or ``dividends``."""
        return self.raw_actions_dir / function / f"{symbol}.parquet"

    @property
    def actions_rejects_dir(self) -> Path:
        """Corporate-action rows that broke a rule, with the rule (beside ``rejects/`` for bars)."""
        return self.shared_root / "rejects_actions"

    def actions_rejects_file(self, symbol: str) -> Path:
        return self.actions_rejects_dir / f"{symbol}.parquet"

    @property
    def raw_listings_dir(self) -> Path:
        """Alpha Vantage's LISTING_STATUS answers as received, one file per state asked."""
        return self.raw_dir / "listings"

    def raw_listings_file(self, state: str) -> Path:
        """``state`` is ``active`` or ``delisted``."""
        return self.raw_listings_dir / f"{state}.parquet"

    @property
    def listings_rejects_dir(self) -> Path:
        """Listing rows that broke a rule, with the rule, in the rejects folder."""
        return self.rejects_dir / "listings"

    def listings_rejects_file(self, state: str) -> Path:
        return self.listings_rejects_dir / f"{state}.parquet"

    def raw_intraday_file(self, symbol: str, interval: str) -> Path:
        """Alpha Vantage's latest TIME_SERIES_INTRADAY answer, one folder per interval."""
        return self.shared_root / "raw_intraday" / interval / f"{symbol}.parquet"

    def clean_intraday_file(self, symbol: str, interval: str) -> Path:
        return self.shared_root / "clean_intraday" / interval / f"{symbol}.parquet"

    def intraday_rejects_file(self, symbol: str, interval: str) -> Path:
        """Rejected intraday bars, in the rejects folder beside the daily ones."""
        return self.rejects_dir / "intraday" / interval / f"{symbol}.parquet"


def shared_from_env() -> Path | None:
    """``MARKET_SHARED_HOME`` as an absolute folder, or None when it is unset or empty."""
    raw = os.environ.get(SHARED_HOME_VAR, "").strip()
    if not raw:
        return None
    if "://" in raw:
        raise SettingsError(_url_refused(raw))
    return Path(raw).resolve()


def _url_refused(url: str) -> str:
    return (
        f"{SHARED_HOME_VAR}={url} is a URL, but the pipeline writes its Parquet with plain file "
        f"operations: set {SHARED_HOME_VAR} to a folder every machine mounts (for an object "
        "store, mount the bucket, e.g. with s3fs or mountpoint-s3)"
    )
