"""The one Definitions object of the code location: assets, job, schedule, sensors, resources."""

from __future__ import annotations

from typing import Any

from dagster import AssetSelection, Definitions, EnvVar, define_asset_job

from market_pipeline.assets import symbol_pipeline
from market_pipeline.automation import INGEST_JOB, daily_update, follow_raw_data, watchlist_sensor
from market_pipeline.partitions import symbols_partitions
from market_pipeline.resources.alpha_vantage import AlphaVantageResource
from market_pipeline.resources.storage import MarketDuckDB
from market_pipeline.settings import Settings


def build_resources(settings: Settings, **client_overrides: Any) -> dict[str, object]:
    """Resources from the environment; the key goes in as ``EnvVar`` so the UI never shows it.

    ``client_overrides`` set other fields of the Alpha Vantage resource (tests shorten backoff).
    """
    return {
        "alpha_vantage": AlphaVantageResource(
            data_home=str(settings.home.root),
            api_key=EnvVar("ALPHAVANTAGE_API_KEY") if settings.api_key else None,
            base_url=settings.base_url,
            requests_per_second=settings.requests_per_second,
            requests_per_minute=settings.requests_per_minute,
            requests_per_day=settings.requests_per_day,
            outputsize=settings.outputsize,
            **client_overrides,
        ),
        "duckdb": MarketDuckDB(database=str(settings.home.duckdb_path)),
    }


ingest_job = define_asset_job(
    INGEST_JOB,
    selection=AssetSelection.assets(symbol_pipeline),
    partitions_def=symbols_partitions,
    description="raw_data -> clean_data -> ohlcv_data for a range of symbols, in one run.",
)

defs = Definitions(
    assets=[symbol_pipeline],
    jobs=[ingest_job],
    schedules=[daily_update],
    sensors=[watchlist_sensor, follow_raw_data],
    resources=build_resources(Settings.from_env()),
)
