"""A worker lost in the middle of a step: the step runs again on another worker, or, with no
worker left, the run fails in bounded time naming the lost one and ``make retry-failed`` loads
what is missing. Machines are lost as a machine is: kill -9 of every process at once."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import DagsterRunStatus

from market_pipeline.cli.instance import open_instance
from tests.cluster.workers import (
    Bars,
    Machines,
    celery_worker,
    cluster_for,
    lake_closes,
    serve_bars,
    served_closes,
)
from tests.stubs.alpha_vantage import AlphaVantageStub

SYMBOLS = [f"L{n:02d}" for n in range(60)]
CALLS_BEFORE_LOSS = 40
"""The worker is lost once the stub has answered this many calls: a third into the step."""
RUN_SECONDS = 420.0
LOSS_WAIT_SECONDS = 120.0
pytestmark = pytest.mark.timeout(900)


@pytest.fixture
def cluster(
    tmp_path: Path,
    shared_env: dict[str, str],
    stub: AlphaVantageStub,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Machines]:
    """Machine 1 only, to begin with."""
    with cluster_for(tmp_path, shared_env, stub, monkeypatch, ("machine-1",)) as m:
        yield m


def lose_mid_step(stub: AlphaVantageStub, cluster: Machines) -> tuple[subprocess.Popen[str], float]:
    """A backfill whose first machine is lost a third into its step; the moment of the loss."""
    launcher = cluster.launch("market_pipeline.cli.ingest", SYMBOLS)
    deadline = time.monotonic() + LOSS_WAIT_SECONDS
    while stub.count() < CALLS_BEFORE_LOSS:
        assert launcher.poll() is None, launcher.communicate()[0]
        assert time.monotonic() < deadline, f"the step never got going\n{cluster.logs()}"
        time.sleep(0.05)
    cluster.started[0].lose()
    return launcher, time.monotonic()


def statuses() -> list[DagsterRunStatus]:
    with open_instance() as instance:
        return [run.status for run in instance.get_runs()]


@pytest.mark.parametrize(
    ("replacement", "why"),
    [
        ("machine-2", "Celery worker machine-1@"),  # another machine takes over
        ("machine-1", "no queue and no worker held it"),  # the same one, restarted at once
    ],
)
def test_a_step_whose_worker_is_lost_runs_again_and_the_run_succeeds(
    replacement: str, why: str, stub: AlphaVantageStub, cluster: Machines
) -> None:
    bars = serve_bars(stub, SYMBOLS)
    launcher, lost_at = lose_mid_step(stub, cluster)
    cluster.worker(replacement)
    code, out = cluster.ended(launcher, RUN_SECONDS)
    print(f"lost worker, {replacement} up at once: the backfill ended "
          f"{time.monotonic() - lost_at:.1f} s after the loss")  # fmt: skip
    assert code == 0, f"{out}\n{cluster.logs()}"
    assert why in out, out

    assert lake_closes(SYMBOLS) == {s: served_closes(rows) for s, rows in bars.items()}
    with open_instance() as instance:
        runs = instance.get_runs()
        assert runs and all(r.status == DagsterRunStatus.SUCCESS for r in runs)
        logs = [entry for run in runs for entry in instance.all_logs(run.run_id)]
    ran_on = {w.split("@")[0] for w in map(celery_worker, logs) if w}
    assert ran_on == {"machine-1", replacement}, "begun on the lost machine, ended on the other"
    messages = " ".join(e.dagster_event.message or "" for e in logs if e.dagster_event)
    assert "sent again" in messages and why in messages, "the run's log says why"


def test_with_no_worker_left_the_run_fails_naming_the_lost_one_and_retry_loads_the_rest(
    stub: AlphaVantageStub, cluster: Machines
) -> None:
    bars: Bars = serve_bars(stub, SYMBOLS)
    launcher, lost_at = lose_mid_step(stub, cluster)
    code, out = cluster.ended(launcher, RUN_SECONDS)
    print(f"no worker left: the backfill failed {time.monotonic() - lost_at:.1f} s after the loss")
    assert code == 1, out
    assert "no Celery worker answered" in out and "machine-1@" in out, out
    assert "make retry-failed" in out
    assert statuses() and set(statuses()) == {DagsterRunStatus.FAILURE}, "ended, not hanging"

    cluster.worker("machine-2")
    code, out = cluster.ended(cluster.launch("market_pipeline.cli.retry", SYMBOLS), RUN_SECONDS)
    assert code == 0, f"{out}\n{cluster.logs()}"
    assert lake_closes(SYMBOLS) == {s: served_closes(rows) for s, rows in bars.items()}
    assert DagsterRunStatus.SUCCESS in statuses()
    assert set(statuses()) <= {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE}
