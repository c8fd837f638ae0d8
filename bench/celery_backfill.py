"""Benchmark 8: a 1000-symbol backfill on two Celery workers (multi-machine mode) against the
embedded run, in the same benchmark.

Both sides fetch compact answers (100 bars) from the project's Alpha Vantage stub (on
loopback, unthrottled) and run ``python -m market_pipeline.cli.ingest``, what ``make ingest``
runs, over fresh state:

* embedded: a fresh data home (SQLite instance, DuckDB file), one run in the ingest's process;
* Celery: a real PostgreSQL (the instance, the limiter's buckets, the lake's catalog) and a real
  Redis (the broker) started here, a fresh shared folder, and two ``make worker`` processes,
  each a "machine" with a data home of its own, started before the clock runs. The ingest, on a
  third data home, splits the backfill into as many runs as the workers run steps at once
  (``market_pipeline.defs.partitions.split_block``); the steps fetch, clean and write Parquet in the
  shared folder, and their loads commit to the lake one at a time.

Everything runs on this machine's cores: the workers compete with each other, PostgreSQL and
Redis for them, as they would not on separate machines.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from bench.datagen import symbol_names
from bench.harness import BENCH_DIR, WORK_DIR, Goal, Result, ratios
from bench.orchestration import BARS_PER_SYMBOL, TIMEOUT, _run
from market_core.home import SHARED_HOME_VAR, DataHome
from market_core.lake import POSTGRES_URL_VAR, LakeSettings, connect
from market_pipeline.cli.serve import Server, stop_all
from market_pipeline.cli.worker import worker_command
from market_pipeline.defs.executor import BROKER_VARIABLE
from tests.stubs.alpha_vantage import AlphaVantageStub
from tools.cluster import CeleryWorker, Machine, create_instances, create_lake
from tools.services import start_postgres, start_redis

WORKERS = ("worker-1", "worker-2")
WORKER_READY_SECONDS = 120.0


def _key_env(stub: AlphaVantageStub) -> dict[str, str]:
    return {
        "ALPHAVANTAGE_API_KEY": "BENCHKEY",
        "ALPHAVANTAGE_BASE_URL": stub.url,
        "ALPHAVANTAGE_OUTPUTSIZE": "compact",
        **{f"ALPHAVANTAGE_REQUESTS_PER_{s}": "0" for s in ("SECOND", "MINUTE", "DAY")},
    }


def _answering(shared: Mapping[str, str]) -> int:
    """How many workers answer on the broker (asked from a child with the shared variables)."""
    code = (
        "from market_pipeline.defs.executor import celery_workers; print(len(celery_workers(1.0)))"
    )
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, **shared},
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    return int(done.stdout.strip() or 0)


@contextmanager
def _workers(root: Path, shared: Mapping[str, str], stub: AlphaVantageStub) -> Iterator[None]:
    """Two ``make worker`` processes, each on a machine of its own, answering when this yields."""
    base = {**os.environ, **_key_env(stub)}
    machines = [Machine(name, root / name) for name in WORKERS]
    create_instances(machines, shared)
    servers: list[Server] = []
    try:
        for machine in machines:
            with machine.log(machine.name).open("ab") as log:
                popen = subprocess.Popen(
                    worker_command(machine.name), env=machine.env(shared, base), stdout=log,
                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, process_group=0,
                )  # fmt: skip
            servers.append(CeleryWorker(machine.name, popen, signal.SIGTERM))
        deadline = time.monotonic() + WORKER_READY_SECONDS
        while _answering(shared) < len(WORKERS):
            if time.monotonic() > deadline or any(s.process.poll() is not None for s in servers):
                raise RuntimeError(f"the workers did not come up; see {root}/*/logs/")
            time.sleep(1.0)
        yield
    finally:
        stop_all(servers)


def _celery_ingest(root: Path, shared: Mapping[str, str], stub: AlphaVantageStub,
                   symbols: list[str]) -> float:  # fmt: skip
    home = DataHome(root / "loader")
    home.root.mkdir(parents=True)
    env = {**os.environ, **_key_env(stub), **shared, "PYTHONPATH": str(BENCH_DIR.parent),
           "MARKET_DATA_HOME": str(home.root), "DAGSTER_HOME": str(home.dagster_home),
           "MARKET_SYMBOLS": ",".join(symbols)}  # fmt: skip
    log = root / "ingest.log"
    started = time.perf_counter()
    with log.open("wb") as out:
        command = [sys.executable, "-m", "market_pipeline.cli.ingest"]
        done = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                              timeout=TIMEOUT, check=False)  # fmt: skip
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"the Celery ingest exited {done.returncode}; see {log}")
    settings = LakeSettings.from_env(shared)
    assert settings is not None
    with connect(settings, read_only=True) as conn:
        rows = conn.execute("SELECT count(*) FROM ohlcv_data").fetchall()[0][0]
    if rows != len(symbols) * BARS_PER_SYMBOL:
        raise RuntimeError(f"the Celery ingest loaded {rows} rows, expected "
                           f"{len(symbols) * BARS_PER_SYMBOL}; see {log}")  # fmt: skip
    runs = sum(1 for line in log.read_text().splitlines() if line.startswith("ingest: run "))
    print(f"    celery: {runs} runs, {elapsed:.1f} s")
    return elapsed


def celery_backfill(count: int, reps: int) -> Result:
    symbols = symbol_names(count)
    root = WORK_DIR / "celery"
    shutil.rmtree(root, ignore_errors=True)
    embedded, celery = [], []
    postgres = start_postgres(root / "postgres")
    redis = start_redis(root / "redis")
    try:
        with AlphaVantageStub() as stub:
            for rep in range(reps):
                seconds, _ = _run("market_pipeline.cli.ingest", DataHome(WORK_DIR / "orch-dagster"),
                                  stub, symbols)  # fmt: skip
                embedded.append(seconds)
                machines = root / f"rep-{rep}"
                shared = {
                    POSTGRES_URL_VAR: postgres.create_database(f"bench_celery_{rep}"),
                    SHARED_HOME_VAR: str(machines / "shared"),
                    BROKER_VARIABLE: redis.url.rsplit("/", 1)[0] + f"/{rep + 1}",
                }
                create_lake(machines, shared)
                with _workers(machines, shared, stub):
                    celery.append(_celery_ingest(machines, shared, stub, symbols))
                print(f"  rep {rep + 1}/{reps}: embedded {embedded[-1]:.1f}s, "
                      f"celery {celery[-1]:.1f}s")  # fmt: skip
    finally:
        redis.stop()
        postgres.stop()
    return _result(count, embedded, celery)


def _result(count: int, embedded: list[float], celery: list[float]) -> Result:
    result = Result("celery-backfill", f"{count}-symbol backfill: two Celery workers vs embedded")
    result.add("embedded backfill (make ingest), wall", "s", embedded, better="lower")
    result.add("Celery backfill, two workers (make ingest), wall", "s", celery, better="lower")
    result.add("ratio Celery / embedded", "x", ratios(celery, embedded), better="lower")
    result.add("Celery backfill per symbol", "ms", [c * 1000 / count for c in celery],
               better="lower")  # fmt: skip
    result.params = {"symbols": count, "outputsize": "compact", "workers": len(WORKERS),
                     "bars_per_answer": 100}  # fmt: skip
    result.goals = [
        Goal(f"{count}-symbol Celery backfill < 5 minutes",
             "Celery backfill, two workers (make ingest), wall", "<", 300.0),
    ]  # fmt: skip
    result.notes = [
        "Wall time of `python -m market_pipeline.cli.ingest` from start to exit on both sides, "
        "over fresh state; the Celery side's workers are up before the clock starts, and its "
        "time includes registering the symbols in PostgreSQL and the lake's commits.",
        "One machine plays every part: two workers (each running as many steps at once as "
        "there are cores), the ingest, PostgreSQL, Redis and the stub share its 2 cores.",
    ]
    return result
