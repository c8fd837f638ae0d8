"""The single-machine reliability suite's figures, on several machines with the real services:
a backfill of 120 symbols through lost workers, a PostgreSQL restart and a Redis restart, with an
API replica of the same lake under load throughout.

After each: every bar exact, no run left in a non-terminal state, and no 5xx from the API but
503 with ``Retry-After``. The time from each fault to recovery is printed (``pytest -s``) for
the docs' figures.
"""

from __future__ import annotations

import datetime as dt
import random
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from dagster import DagsterRunStatus, EventLogEntry

from market_core.home import DataHome
from market_pipeline.cli.instance import open_instance
from tests.cluster.api_load import Load, assert_no_5xx_but_503_with_retry_after, running
from tests.cluster.services import PostgresService, RedisService
from tests.cluster.workers import (
    Bars,
    Machines,
    cluster_for,
    lake_closes,
    serve_bars,
    served_closes,
)
from tests.served_api import serve
from tests.stubs.alpha_vantage import AlphaVantageStub

SYMBOLS = [f"F{n:03d}" for n in range(120)]
CALLS_PER_SYMBOL = 3  # the daily series, dividends and splits
RUN_SECONDS = 600.0
FAULT_WAIT_SECONDS = 180.0
OUTAGE_SECONDS = 20.0
HITS = ("/health", "/instruments")
MISS = "/instruments/F000/ohlcv?limit={n}"
SERVED = frozenset({200, 404})  # 404: F000 not loaded yet
TERMINAL = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
pytestmark = pytest.mark.timeout(1500)


@pytest.fixture
def shared_env(
    own_postgres: PostgresService, own_redis: RedisService, tmp_path: Path
) -> dict[str, str]:
    """Servers of this test's own, which it restarts."""
    return {
        "MARKET_POSTGRES_URL": own_postgres.url,
        "MARKET_SHARED_HOME": str(tmp_path / "shared"),
        "MARKET_CELERY_BROKER_URL": own_redis.url,
    }


@pytest.fixture
def cluster(
    tmp_path: Path,
    shared_env: dict[str, str],
    stub: AlphaVantageStub,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Machines]:
    """Two workers."""
    with cluster_for(tmp_path, shared_env, stub, monkeypatch, ("machine-1", "machine-2")) as m:
        yield m


@pytest.fixture
def replica(tmp_path: Path, shared_env: dict[str, str]) -> Iterator[Load]:
    """``make api`` on a machine of its own, reading the lake the backfill writes, under load."""
    lake = {k: v for k, v in shared_env.items() if k != "MARKET_CELERY_BROKER_URL"}
    with ExitStack() as stack:
        api = stack.enter_context(serve(DataHome(tmp_path / "api"), tmp_path / "api.log", **lake))
        yield stack.enter_context(running(Load(api.base, HITS, MISS)))


def report(load: Load) -> str:
    statuses = sorted({a.status or 0 for a in load.answers})
    counts = {s: sum(a.status == s for a in load.answers) for s in statuses}
    return f"API under load: {len(load.answers)} answers, by status {counts}"


def wait_for_calls(stub: AlphaVantageStub, calls: int, launcher: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + FAULT_WAIT_SECONDS
    while stub.count() < calls:
        assert launcher.poll() is None, "the backfill ended before the fault"
        assert time.monotonic() < deadline, "the backfill never reached the fault's moment"
        time.sleep(0.05)


def message(entry: EventLogEntry) -> str:
    event = entry.dagster_event
    return (event.message if event is not None else entry.user_message) or ""


def runs_and_logs() -> tuple[list[DagsterRunStatus], list[EventLogEntry]]:
    with open_instance() as instance:
        runs = instance.get_runs()
        logs = [entry for run in runs for entry in instance.all_logs(run.run_id)]
    return [run.status for run in runs], logs


def assert_whole(bars: Bars) -> None:
    """Every bar exact, and every run ended."""
    assert lake_closes(SYMBOLS) == {s: served_closes(rows) for s, rows in bars.items()}
    statuses, _ = runs_and_logs()
    assert statuses and set(statuses) <= TERMINAL, f"a run left hanging: {statuses}"


def test_three_workers_lost_at_random_moments_cost_retries_not_bars(
    stub: AlphaVantageStub, cluster: Machines, replica: Load
) -> None:
    bars = serve_bars(stub, SYMBOLS)
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    calls = CALLS_PER_SYMBOL * len(SYMBOLS)
    moments = sorted(rng.sample(range(calls // 10, calls * 7 // 10), 3))
    print(f"seed {seed}: workers lost after {moments} calls")
    launcher = cluster.launch("market_pipeline.cli.ingest", SYMBOLS)
    lost: list[tuple[str, float]] = []
    for n, moment in enumerate(moments, start=3):
        wait_for_calls(stub, moment, launcher)
        victim = rng.choice([w for w in cluster.started if w.process.poll() is None])
        victim.lose()
        lost.append((victim.name, time.time()))
        cluster.worker(f"machine-{n}")  # the lost machine is replaced, as an autoscaler does
    code, out = cluster.ended(launcher, RUN_SECONDS)
    assert code == 0, f"{out[-6000:]}\n{cluster.logs()}"
    assert_whole(bars)
    _, logs = runs_and_logs()
    resent = [(e.timestamp, message(e)) for e in logs if "sent again" in message(e)]
    assert resent, "a lost worker held a step, which was sent again"
    for name, at in lost:
        delays = [t - at for t, text in resent if f"{name}@" in text and t > at]
        held = f"its step sent again {min(delays):.1f} s later" if delays else "it held no step"
        print(f"{name} lost at {dt.datetime.fromtimestamp(at):%H:%M:%S}: {held}")
    print(f"backfill ended {time.time() - lost[-1][1]:.1f} s after the last loss")
    print(report(replica))
    assert_no_5xx_but_503_with_retry_after(replica.answers, SERVED)


@pytest.mark.parametrize("service", ["PostgreSQL", "Redis"])
def test_a_service_restarted_mid_backfill_ends_every_run_and_loses_no_bar(
    service: str,
    stub: AlphaVantageStub,
    cluster: Machines,
    own_postgres: PostgresService,
    own_redis: RedisService,
    replica: Load,
) -> None:
    restarted = own_postgres if service == "PostgreSQL" else own_redis
    bars = serve_bars(stub, SYMBOLS)
    launcher = cluster.launch("market_pipeline.cli.ingest", SYMBOLS)
    wait_for_calls(stub, len(SYMBOLS), launcher)
    restarted.stop_server()
    time.sleep(OUTAGE_SECONDS)
    restarted.start_server()
    back = time.monotonic()
    code, out = cluster.ended(launcher, RUN_SECONDS)
    print(f"{service} restart: the backfill ended (exit {code}) "
          f"{time.monotonic() - back:.1f} s after {service} was back")  # fmt: skip
    statuses, _ = runs_and_logs()
    assert statuses and set(statuses) <= TERMINAL, f"a run left hanging: {statuses}\n{out}"
    retries = 0
    while code != 0:  # as a user would: make retry-failed, which the workers serve unrestarted
        retries += 1
        assert retries <= 2, f"make retry-failed did not load the rest:\n{out[-6000:]}"
        code, out = cluster.ended(cluster.launch("market_pipeline.cli.retry", SYMBOLS), RUN_SECONDS)
    if retries:
        print(f"{service} restart: loaded in full {time.monotonic() - back:.1f} s after it was "
              f"back, with {retries} make retry-failed")  # fmt: skip
    assert_whole(bars)
    assert all(w.process.poll() is None for w in cluster.started), "the workers reconnected"
    print(report(replica))
    # The API's catalog is PostgreSQL: 503 with Retry-After while it is down; Redis it has not.
    expected = SERVED | {503} if service == "PostgreSQL" else SERVED
    assert_no_5xx_but_503_with_retry_after(replica.answers, expected)
