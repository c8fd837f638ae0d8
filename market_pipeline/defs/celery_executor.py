"""dagster-celery's executor, whose steps are watched for lost workers (``step_watch``)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

from celery import Celery
from dagster import DagsterEvent, executor
from dagster import multiple_process_executor_requirements as requirements
from dagster._core.events import EngineEventData
from dagster._core.execution.context.system import PlanOrchestrationContext
from dagster._core.execution.plan.plan import ExecutionPlan
from dagster._core.execution.plan.step import ExecutionStep
from dagster._core.execution.retries import RetryMode
from dagster_celery.core_execution_loop import core_celery_execution_loop
from dagster_celery.executor import CELERY_CONFIG, CeleryExecutor, _submit_task

from market_pipeline.defs.executor import CELERY_SETTINGS
from market_pipeline.defs.step_watch import WatchedStep, Workers


class WatchedCeleryExecutor(CeleryExecutor):
    """Runs dagster-celery's own loop; only the handle it waits on per step is ours."""

    def execute(
        self, plan_context: PlanOrchestrationContext, execution_plan: ExecutionPlan
    ) -> Iterator[DagsterEvent]:
        watched: dict[int, Workers] = {}

        def submit(
            app: Celery,
            context: PlanOrchestrationContext,
            step: ExecutionStep,
            queue: str,
            priority: int,
            known_state: Any,
        ) -> WatchedStep:
            workers = watched.setdefault(id(app), Workers(app))
            return WatchedStep(
                step.key,
                lambda: _submit_task(app, context, step, queue, priority, known_state),
                workers,
                _reporter(context, step.key),
            )

        return core_celery_execution_loop(plan_context, execution_plan, step_execution_fn=submit)


def _reporter(context: PlanOrchestrationContext, step_key: str) -> Any:
    def report(message: str) -> None:
        print(f"celery: {message}", file=sys.stderr, flush=True)
        try:
            context.instance.report_engine_event(
                message, context.dagster_run, EngineEventData(), WatchedCeleryExecutor, step_key
            )
        except Exception as exc:  # the instance's database may be the thing that is down
            print(f"celery: could not write that to the run's log: {exc!r}", file=sys.stderr)

    return report


@executor(
    name="celery_watched",
    config_schema=CELERY_CONFIG,
    requirements=requirements(),
)
def watched_celery_executor(init_context: Any) -> WatchedCeleryExecutor:
    config = init_context.executor_config
    return WatchedCeleryExecutor(
        broker=config.get("broker"),
        backend=config.get("backend"),
        config_source={**CELERY_SETTINGS, **(config.get("config_source") or {})},
        include=config.get("include"),
        retries=RetryMode.from_config(config["retries"]),
    )
