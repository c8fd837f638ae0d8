"""The one Definitions object of the code location: assets, job, schedule, sensors, resources."""

from __future__ import annotations

import os
from typing import Any

from dagster import (
    AssetSelection,
    ConfigurableResource,
    Definitions,
    ExecutorDefinition,
    JobDefinition,
    define_asset_job,
)

from market_core.home import DataHome
from market_pipeline.assets import intraday_pipeline, symbol_pipeline
from market_pipeline.automation import INGEST_JOB, daily_update, follow_raw_data, watchlist_sensor
from market_pipeline.cluster import BROKER_VARIABLE
from market_pipeline.intraday_sensor import INTRADAY_JOB, intraday_sensor
from market_pipeline.maintenance import maintenance_definitions
from market_pipeline.partitions import WatchlistResource, symbols_partitions
from market_pipeline.resources.alpha_vantage import AlphaVantageResource
from market_pipeline.resources.lake_storage import store_from_env


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


def executor_from_env() -> ExecutorDefinition | None:
    """dagster-celery's executor when ``MARKET_CELERY_BROKER_URL`` is set, else Dagster's default.

    Broker and result backend are both that URL, named by variable so that the run resolves it
    in its own environment and no URL lands in run config or the UI; ``make worker`` starts its
    workers with the same block. Every job of the location without an executor of its own gets
    it, so the schedule's, the sensors' and the UI's runs all send their steps to the workers.
    """
    if not os.environ.get(BROKER_VARIABLE, "").strip():
        return None
    from dagster_celery import celery_executor  # Celery loads only in the mode that uses it

    from_env = {"env": BROKER_VARIABLE}
    return celery_executor.configured(
        {"broker": from_env, "backend": from_env}, name="celery_on_market_broker"
    )


CELERY_PING_SECONDS = 5.0


def celery_workers(timeout: float = CELERY_PING_SECONDS) -> dict[str, int]:
    """The Celery workers answering on ``MARKET_CELERY_BROKER_URL`` within ``timeout``, each
    with the number of steps it runs at once (its pool's concurrency).

    A run's steps wait in the broker's queue for as long as no worker takes them, so a launcher
    asks first rather than hang, and ``make ingest`` splits a backfill into as many runs as
    there are places to run them. Raises kombu's ``OperationalError`` when the broker is down.
    """
    from celery import Celery

    url = os.environ[BROKER_VARIABLE].strip()
    app = Celery(broker=url, backend=url)
    app.conf.broker_transport_options = {"max_retries": 1, "interval_start": 0}
    try:
        replies = app.control.inspect(timeout=timeout).stats() or {}
    finally:
        app.close()
    return {
        name: max(1, int(stats.get("pool", {}).get("max-concurrency", 1)))
        for name, stats in sorted(replies.items())
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
