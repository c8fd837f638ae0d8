"""The executor of every job: Dagster's default, or dagster-celery's on the workers."""

from __future__ import annotations

import os

from dagster import ExecutorDefinition

BROKER_VARIABLE = "MARKET_CELERY_BROKER_URL"
CELERY_SETTINGS: dict[str, object] = {
    # The run learns which worker holds each step (the state STARTED carries its hostname).
    "task_track_started": True,
    # A worker takes a message only when a process is free, so a message is either queued or
    # running (acknowledged as it starts): a lost worker strands no queued step.
    "worker_disable_prefetch": True,
    "worker_prefetch_multiplier": 1,
    # A result finished during a Redis restart is stored once Redis is back, not dropped.
    "result_backend_always_retry": True,
    "result_backend_max_retries": 120,
    "result_backend_max_sleep_between_retries_ms": 1000,
    "broker_connection_retry_on_startup": True,
    "broker_connection_max_retries": None,
}
"""Celery settings the runs and ``make worker`` share; why early acks: docs/several-machines.md."""


def executor_from_env() -> ExecutorDefinition | None:
    """dagster-celery's executor, with lost workers watched, when ``MARKET_CELERY_BROKER_URL``
    is set; else Dagster's default.

    Broker and result backend are both that URL, named by variable so that the run resolves it
    in its own environment and no URL lands in run config or the UI; ``make worker`` starts its
    workers with the same settings. Every job of the location without an executor of its own
    gets it, so the schedule's, the sensors' and the UI's runs all send their steps to the
    workers.
    """
    if not os.environ.get(BROKER_VARIABLE, "").strip():
        return None
    from market_pipeline.defs.celery_executor import watched_celery_executor  # Celery mode only

    from_env = {"env": BROKER_VARIABLE}
    return watched_celery_executor.configured(
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
