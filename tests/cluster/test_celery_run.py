"""A run launched on one machine executes its steps on a Celery worker of another.

Machine A runs ``make ingest``'s program; machine B runs ``make worker``'s. Their data homes share
nothing: only PostgreSQL (the instance, the limiter, the lake's catalog), Redis (the broker) and
the shared folder join them. The step's work must land where every machine sees it, and nothing
of it in A's data home.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from celery import Celery
from dagster import DagsterRunStatus

from market_core.home import DataHome
from market_core.lake import LakeSettings, connect
from market_pipeline.cli.instance import open_instance
from market_pipeline.defs.executor import celery_workers
from market_pipeline.defs.partitions import RUN_MIN_SYMBOLS, split_block
from market_pipeline.source.rate_limit import bucket_table
from tests.cluster.machines import REPO, machine_env
from tests.cluster.workers import celery_worker, key_env, lake_closes, served_closes
from tests.conftest import TEST_KEY
from tests.pipeline.helpers import recent_bars
from tests.stubs.alpha_vantage import AlphaVantageStub

SYMBOLS = ("AAA", "BBB")
WORKER_NAME = "machine-b"
WORKER_READY_SECONDS = 120.0
WORKER_STOP_SECONDS = 30.0
RUN_SECONDS = 420.0
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def worker_answers(broker: str) -> bool:
    app = Celery(broker=broker, backend=broker)
    try:
        replies = app.control.ping(timeout=1.0)
    finally:
        app.close()
    return any(WORKER_NAME in name for reply in replies for name in reply)


@pytest.fixture
def worker_b(tmp_path: Path, shared_env: dict[str, str], stub: AlphaVantageStub) -> Iterator[Path]:
    """``make worker`` on machine B, started in a session of its own; its data home."""
    home = tmp_path / "machine-b"
    env = machine_env(home, shared_env, **key_env(stub.url))
    log = (tmp_path / "worker-b.log").open("w")
    command = [sys.executable, "-m", "market_pipeline.cli.worker", "--name", WORKER_NAME]
    worker = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + WORKER_READY_SECONDS
        while not worker_answers(shared_env["MARKET_CELERY_BROKER_URL"]):
            if worker.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"the worker did not come up:\n{(tmp_path / 'worker-b.log').read_text()}"
                )
            time.sleep(0.5)
        yield home
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=WORKER_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(timeout=10)
        log.close()


def test_a_run_launched_on_machine_a_executes_on_the_worker_of_machine_b(
    tmp_path: Path,
    shared_env: dict[str, str],
    stub: AlphaVantageStub,
    worker_b: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bars = {symbol: recent_bars(20, start_price=10.0 * (n + 1)) for n, symbol in enumerate(SYMBOLS)}
    for symbol, served in bars.items():
        stub.set_bars(symbol, served)
    home_a = tmp_path / "machine-a"
    env_a = machine_env(home_a, shared_env, MARKET_SYMBOLS=",".join(SYMBOLS), **key_env(stub.url))
    done = subprocess.run(
        [sys.executable, "-m", "market_pipeline.cli.ingest"],
        cwd=REPO, env=env_a, capture_output=True, text=True, timeout=RUN_SECONDS,
    )  # fmt: skip
    worker_log = (tmp_path / "worker-b.log").read_text()
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n--- worker B ---\n{worker_log}"
    assert "ok" in done.stdout

    table = bucket_table(TEST_KEY)
    for name, value in shared_env.items():  # a third machine looks at what A and B left
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MARKET_DATA_HOME", str(tmp_path / "machine-c"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    with open_instance() as instance:
        [run] = instance.get_runs()
        assert run.status == DagsterRunStatus.SUCCESS
        workers = [celery_worker(entry) for entry in instance.all_logs(run.run_id)]
    assert [w for w in workers if w], "the step was handed to a Celery worker, in Postgres' log"
    assert all(w.startswith(f"{WORKER_NAME}@") for w in workers if w), "machine B's worker"

    assert lake_closes(SYMBOLS) == {s: served_closes(served) for s, served in bars.items()}
    shared = DataHome(home_a, Path(shared_env["MARKET_SHARED_HOME"]))
    for symbol in SYMBOLS:
        assert shared.raw_file(symbol).exists() and shared.clean_file(symbol).exists()
    assert list((shared.shared_root / "dagster" / "logs").rglob("*")), "B's compute logs, shared"
    for home in (home_a, worker_b):
        kept = {p.name for p in home.iterdir()}
        assert not kept & {"raw", "clean", "rejects", "raw_actions"}, f"{home}: {kept}"
    with psycopg.connect(shared_env["MARKET_POSTGRES_URL"]) as conn:
        sessions = conn.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
        limiter = conn.execute("SELECT to_regclass(%s)", (f"ratelimit___{table}_day",)).fetchone()
    assert limiter is not None and limiter[0] is not None, "the worker's permits came from there"
    assert sessions == (0,), "the worker's steps left no connection open behind them"
    a_dagster = {p.name for p in DataHome(home_a).dagster_home.iterdir()}
    assert a_dagster <= {"dagster.yaml", "dagster.yaml.lock"}, "no run state in A's home"


def test_ingest_with_a_broker_but_no_worker_says_so_instead_of_waiting(
    tmp_path: Path, shared_env: dict[str, str], stub: AlphaVantageStub
) -> None:
    env = machine_env(tmp_path / "machine-a", shared_env, MARKET_SYMBOLS="AAA", **key_env(stub.url))
    done = subprocess.run(
        [sys.executable, "-m", "market_pipeline.cli.ingest"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no Celery worker answers on MARKET_CELERY_BROKER_URL" in done.stderr
    assert "make worker" in done.stderr
    assert stub.count() == 0, "nothing was fetched for a run that could not run"


def test_a_backfill_splits_into_concurrent_runs_one_per_place_the_workers_offer(
    tmp_path: Path,
    shared_env: dict[str, str],
    stub: AlphaVantageStub,
    worker_b: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    symbols = [f"S{n:03d}" for n in range(2 * RUN_MIN_SYMBOLS)]
    env_a = machine_env(tmp_path / "machine-a", shared_env, MARKET_SYMBOLS=",".join(symbols),
                        ALPHAVANTAGE_OUTPUTSIZE="compact", **key_env(stub.url))  # fmt: skip
    for name, value in shared_env.items():
        monkeypatch.setenv(name, value)
    places = sum(celery_workers().values())
    assert places >= 2, "a worker runs as many steps at once as the machine has cores (2 in CI)"
    done = subprocess.run(
        [sys.executable, "-m", "market_pipeline.cli.ingest"],
        cwd=REPO, env=env_a, capture_output=True, text=True, timeout=RUN_SECONDS,
    )  # fmt: skip
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"

    monkeypatch.setenv("MARKET_DATA_HOME", str(tmp_path / "machine-c"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    with open_instance() as instance:
        runs = sorted(instance.get_runs(), key=lambda r: r.tags[RANGE_START])
        records = {r.dagster_run.run_id: r for r in instance.get_run_records()}
    assert [(r.tags[RANGE_START], r.tags[RANGE_END]) for r in runs] == [
        (part[0], part[-1]) for part in split_block(symbols, places)
    ], "one run per range, the ranges covering the backfill"
    assert all(r.status == DagsterRunStatus.SUCCESS for r in runs)
    first, second = (records[r.run_id] for r in runs)
    assert first.start_time is not None and second.start_time is not None
    assert first.end_time is not None and second.end_time is not None
    assert second.start_time < first.end_time and first.start_time < second.end_time, (
        "the runs went at the same time"
    )
    with connect(LakeSettings.from_env() or pytest.fail("lake mode"), read_only=True) as conn:
        loaded = conn.execute("SELECT count(DISTINCT symbol) FROM ohlcv_data").fetchone()
    assert loaded == (len(symbols),)
