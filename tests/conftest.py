"""Shared fixtures: a temporary data home, a live Alpha Vantage stub, a real Dagster instance."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dagster import DagsterInstance, ExecuteInProcessResult, materialize

from market_core.home import DataHome
from market_pipeline.defs.daily import symbol_pipeline
from market_pipeline.defs.partitions import symbols_partitions
from market_pipeline.defs.resources import resources_from_env
from tests.stubs.alpha_vantage import AlphaVantageStub

TEST_KEY = "TESTKEY1234567890SECRET"
ENV_VARS = (
    "ALPHAVANTAGE_API_KEY", "ALPHAVANTAGE_BASE_URL", "ALPHAVANTAGE_REQUESTS_PER_SECOND",
    "ALPHAVANTAGE_REQUESTS_PER_MINUTE", "ALPHAVANTAGE_REQUESTS_PER_DAY", "ALPHAVANTAGE_OUTPUTSIZE",
    "MARKET_DATA_HOME", "MARKET_SYMBOLS", "MARKET_HISTORY_START", "MARKET_WATCHLIST",
    "DAGSTER_HOME", "MARKET_POSTGRES_URL", "MARKET_SHARED_HOME", "MARKET_CELERY_BROKER_URL",
    "MARKET_LAKE_KEEP_DAYS", "ALPHAVANTAGE_INTRADAY_INTERVAL", "ALPHAVANTAGE_INTRADAY_EXTENDED",
    "MARKET_UNIVERSE", "MARKET_LISTINGS_REFRESH_DAYS",
)  # fmt: skip


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see the developer's own key or data home."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> DataHome:
    root = tmp_path / "home"
    monkeypatch.setenv("MARKET_DATA_HOME", str(root))
    return DataHome(root)


@pytest.fixture
def stub() -> Iterator[AlphaVantageStub]:
    with AlphaVantageStub() as server:
        yield server


@pytest.fixture
def keyed(
    stub: AlphaVantageStub, home: DataHome, monkeypatch: pytest.MonkeyPatch
) -> AlphaVantageStub:
    """The pipeline talks to the stub with a key and no rate limit."""
    monkeypatch.setenv("ALPHAVANTAGE_API_KEY", TEST_KEY)
    monkeypatch.setenv("ALPHAVANTAGE_BASE_URL", stub.url)
    for scale in ("SECOND", "MINUTE", "DAY"):
        monkeypatch.setenv(f"ALPHAVANTAGE_REQUESTS_PER_{scale}", "0")
    return stub


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[DagsterInstance]:
    (tmp_path / "dagster").mkdir()
    with DagsterInstance.local_temp(
        str(tmp_path / "dagster"), overrides={"telemetry": {"enabled": False}}
    ) as inst:
        yield inst


Run = Callable[..., ExecuteInProcessResult]


@pytest.fixture
def run(instance: DagsterInstance, home: DataHome) -> Run:
    """Materialize the graph (or a selection) for symbols, as one multi-partition run."""

    def _run(
        symbols: list[str], selection: list[str] | None = None, **resource_overrides: object
    ) -> ExecuteInProcessResult:
        instance.add_dynamic_partitions(symbols_partitions.name or "symbols", symbols)
        resources = resources_from_env(backoff_seconds=0.01, timeout_seconds=1.0,
                                       **resource_overrides)  # fmt: skip
        tags = (
            {"dagster/asset_partition_range_start": symbols[0],
             "dagster/asset_partition_range_end": symbols[-1]}
            if len(symbols) > 1 else {}
        )  # fmt: skip
        return materialize(
            [symbol_pipeline],
            instance=instance,
            resources=resources,
            partition_key=symbols[0] if len(symbols) == 1 else None,
            tags=tags,
            selection=selection,
            raise_on_error=False,
        )

    return _run


def env_snapshot() -> dict[str, str]:
    return {k: os.environ[k] for k in ENV_VARS if k in os.environ}
