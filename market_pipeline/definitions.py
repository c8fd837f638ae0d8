"""The code location: one ``Definitions``, built when Dagster loads the location, not on import.

``workspace.yaml`` and ``[tool.dagster]`` name this module; Dagster's loader finds the
``@definitions`` function and calls it, so the environment is read once per load.
"""

from __future__ import annotations

from dagster import Definitions, JobDefinition, definitions

from market_pipeline.defs.automation import (
    INGEST_JOB,
    daily_update,
    follow_raw_data,
    watchlist_sensor,
)
from market_pipeline.defs.daily import ingest_job, symbol_pipeline
from market_pipeline.defs.executor import executor_from_env
from market_pipeline.defs.freshness import freshness_job, freshness_schedule, ohlcv_freshness
from market_pipeline.defs.intraday import intraday_job, intraday_pipeline
from market_pipeline.defs.intraday_sensor import intraday_sensor
from market_pipeline.defs.listings import listings, listings_job, listings_refresh
from market_pipeline.defs.maintenance import maintenance_definitions
from market_pipeline.defs.resources import resources_from_env


@definitions
def defs() -> Definitions:
    """Every asset, job, schedule and sensor, with the resources and executor the environment
    asks for (the lake's maintenance jobs only in lake mode)."""
    maintenance_jobs, maintenance_schedules = maintenance_definitions()
    return Definitions(
        assets=[symbol_pipeline, intraday_pipeline, listings],
        asset_checks=[ohlcv_freshness],
        jobs=[ingest_job, intraday_job, listings_job, freshness_job, *maintenance_jobs],
        schedules=[daily_update, freshness_schedule, *maintenance_schedules],
        sensors=[watchlist_sensor, follow_raw_data, intraday_sensor, listings_refresh],
        resources=resources_from_env(),
        executor=executor_from_env(),
    )


def resolved_ingest_job() -> JobDefinition:
    """``ingest_job`` as the location resolves it: what a Celery worker rebuilds to run a step
    (``build_reconstructable_job(__name__, "resolved_ingest_job")``)."""
    return defs().resolve_job_def(INGEST_JOB)
