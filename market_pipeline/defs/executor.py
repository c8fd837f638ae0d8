"""The executor of every job: Dagster's default, or dagster-celery's on the workers."""

from __future__ import annotations

import os

from dagster import ExecutorDefinition

BROKER_VARIABLE = "MARKET_CELERY_BROKER_URL"


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
