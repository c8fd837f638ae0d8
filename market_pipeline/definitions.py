"""The one Definitions object of the code location: assets, job, schedule, sensors, resources."""

from __future__ import annotations

from typing import Any

from dagster import (
    AssetSelection,
    ConfigurableResource,
    Definitions,
    JobDefinition,
    define_asset_job,
)

from market_core.home import DataHome
from market_pipeline.defs.assets import intraday_pipeline, symbol_pipeline
from market_pipeline.defs.automation import (
    INGEST_JOB,
    daily_update,
    follow_raw_data,
    watchlist_sensor,
)
from market_pipeline.defs.executor import executor_from_env
from market_pipeline.defs.intraday_sensor import INTRADAY_JOB, intraday_sensor
from market_pipeline.defs.maintenance import maintenance_definitions
from market_pipeline.defs.partitions import WatchlistResource, symbols_partitions
from market_pipeline.source.client import AlphaVantageResource
from market_pipeline.store.lake import store_from_env


def resources_from_env(**alpha_vantage: Any) -> dict[str, ConfigurableResource]:
    """The resources every op, schedule and sensor of the location gets, from the environment.

    The data home is read once and handed to both resources that need it as an absolute path:
    the DuckDB file's path is built from it, so it cannot stay an ``EnvVar``. ``alpha_vantage``
    sets other fields of that resource (tests shorten its backoff and timeouts).
    """
    home = DataHome.from_env()
    return {
        "alpha_vantage": AlphaVantageResource.from_env(str(home.root), **alpha_vantage),
        "duckdb": store_from_env(home),
        "watchlist": WatchlistResource.from_env(),
    }


ingest_job = define_asset_job(
    INGEST_JOB,
    selection=AssetSelection.assets(symbol_pipeline),
    partitions_def=symbols_partitions,
    description=(
        "raw_data -> clean_data -> ohlcv_data, and raw_actions -> corporate_actions where due, "
        "for a range of symbols, in one run."
    ),
)

intraday_job = define_asset_job(
    INTRADAY_JOB,
    selection=AssetSelection.assets(intraday_pipeline),
    partitions_def=symbols_partitions,
    description=(
        "raw_intraday -> clean_intraday -> intraday_data for a range of symbols, in one run "
        "(the intraday sensor's, during the session, when ALPHAVANTAGE_INTRADAY_INTERVAL is set)."
    ),
)

resources = resources_from_env()
maintenance_jobs, maintenance_schedules = maintenance_definitions()  # lake mode only
defs = Definitions(
    assets=[symbol_pipeline, intraday_pipeline],
    jobs=[ingest_job, intraday_job, *maintenance_jobs],
    schedules=[daily_update, *maintenance_schedules],
    sensors=[watchlist_sensor, follow_raw_data, intraday_sensor],
    resources=resources,
    executor=executor_from_env(),
)


def resolved_ingest_job() -> JobDefinition:
    """``ingest_job`` as the location resolves it: what a Celery worker rebuilds to run a step
    (``build_reconstructable_job(__name__, "resolved_ingest_job")``)."""
    return defs.resolve_job_def(INGEST_JOB)
