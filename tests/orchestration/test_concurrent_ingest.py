"""Two ``make ingest`` at the same moment on a fresh data home: both create the Dagster instance.

Dagster creates its SQLite storage on first opening with no guard against a second process; one
of two ingests started together used to die on ``table secondary_indexes already exists``. The
race is a matter of milliseconds, so each process does its slow imports first and then waits on
a barrier file; a few fresh data homes make a lost race near certain without the lock.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from market_core.home import DataHome
from market_pipeline.cli.instance import open_instance
from market_pipeline.defs.partitions import PARTITIONS
from tests.conftest import ENV_VARS, TEST_KEY
from tests.pipeline.helpers import recent_bars, table_rows
from tests.stubs.alpha_vantage import AlphaVantageStub

REPO = Path(__file__).resolve().parents[2]
ATTEMPTS = 3
PER_SECOND = 2
# `python -m market_pipeline.cli.ingest`, with a barrier between the imports (seconds) and main().
LAUNCH = """\
import pathlib, sys, time
from market_pipeline import definitions
from market_pipeline.cli import ingest
pathlib.Path(sys.argv[1]).touch()
while not pathlib.Path(sys.argv[2]).exists():
    time.sleep(0.001)
raise SystemExit(ingest.main())
"""
# Two ingests adding the same new symbols to an existing instance, released at one barrier.
REGISTER = """\
import pathlib, sys, time
from market_pipeline.cli.ingest import register
from market_pipeline.cli.instance import open_instance
with open_instance() as instance:
    pathlib.Path(sys.argv[1]).touch()
    while not pathlib.Path(sys.argv[2]).exists():
        time.sleep(0.0005)
    register(instance, [f"S{i}" for i in range(50)])
"""


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[str]]]:
    """The ingest processes of a test; any still running at its end is killed."""
    processes: list[subprocess.Popen[str]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def most_in_one_second(times: list[float]) -> int:
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= 1.0:
            start += 1
        best = max(best, end - start + 1)
    return best


def launch(ready: Path, go: Path, env: dict[str, str], code: str = LAUNCH) -> subprocess.Popen[str]:
    command = [sys.executable, "-c", code, str(ready), str(go)]
    return subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def together(
    code: str, env: dict[str, str], barrier: Path, started: list[subprocess.Popen[str]]
) -> list[tuple[int, str]]:
    """Start two processes, release them at once when both are ready; their (code, output)."""
    barrier.mkdir()
    ready = [barrier / f"ready-{i}" for i in range(2)]
    go = barrier / "go"
    pair = [launch(r, go, env, code) for r in ready]
    started.extend(pair)
    deadline = time.monotonic() + 120
    while not all(r.exists() for r in ready):
        assert all(p.poll() is None for p in pair), [p.communicate()[0] for p in pair]
        assert time.monotonic() < deadline, "the processes never got ready"
        time.sleep(0.01)
    go.touch()
    return [(p.wait(timeout=240), p.communicate()[0]) for p in pair]


def base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ENV_VARS}


def ingest_together(
    home: DataHome, stub: AlphaVantageStub, barrier: Path, started: list[subprocess.Popen[str]]
) -> list[tuple[int, str]]:
    env = base_env() | {
        "MARKET_DATA_HOME": str(home.root), "MARKET_SYMBOLS": "A,B",
        "ALPHAVANTAGE_API_KEY": TEST_KEY, "ALPHAVANTAGE_BASE_URL": stub.url,
        "ALPHAVANTAGE_REQUESTS_PER_SECOND": str(PER_SECOND),
        "ALPHAVANTAGE_REQUESTS_PER_MINUTE": "0", "ALPHAVANTAGE_REQUESTS_PER_DAY": "0",
    }  # fmt: skip
    return together(LAUNCH, env, barrier, started)


def test_two_ingests_on_a_fresh_data_home_both_load_and_share_the_rate_limit(
    stub: AlphaVantageStub, tmp_path: Path, started: list[subprocess.Popen[str]]
) -> None:
    bars = {"A": recent_bars(20), "B": recent_bars(25, start_price=40)}
    for symbol, served in bars.items():
        stub.set_bars(symbol, served)
    for attempt in range(ATTEMPTS):
        stub.requests.clear()
        home = DataHome(tmp_path / f"home-{attempt}")
        results = ingest_together(home, stub, tmp_path / f"barrier-{attempt}", started)
        for code, output in results:
            assert code == 0, f"attempt {attempt}:\n{output}"
        for symbol, served in bars.items():
            stored = [r[0] for r in table_rows(home, symbol)]
            assert stored == [dt.datetime.fromisoformat(day) for day, _ in served], symbol
        assert stub.count() > PER_SECOND, "enough calls for the limit to bind"
        assert most_in_one_second([r.at for r in stub.requests]) <= PER_SECOND


def test_two_ingests_adding_the_same_new_symbols_both_proceed(
    tmp_path: Path, started: list[subprocess.Popen[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dagster reads the registered symbols, then inserts the new ones: both would insert."""
    for attempt in range(ATTEMPTS):
        home = DataHome(tmp_path / f"home-{attempt}")
        env = base_env() | {"MARKET_DATA_HOME": str(home.root)}
        with subprocess.Popen(
            [sys.executable, "-m", "market_pipeline.cli.instance"], env=env
        ) as made:
            assert made.wait(timeout=120) == 0
        results = together(REGISTER, env, tmp_path / f"barrier-{attempt}", started)
        for code, output in results:
            assert code == 0, f"attempt {attempt}:\n{output}"
        monkeypatch.setenv("MARKET_DATA_HOME", str(home.root))
        with open_instance() as instance:
            assert instance.get_dynamic_partitions(PARTITIONS) == [f"S{i}" for i in range(50)]
