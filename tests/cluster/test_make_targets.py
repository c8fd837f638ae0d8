"""``make worker`` and ``make cluster`` as a user runs them: real processes, real signals.

How ``make worker`` stops (SIGTERM, Ctrl-C, SIGKILL of make) is in test_worker_process.py."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.services import listeners
from tests.cluster.workers import answering, processes_using
from tests.launch import DEFAULT_SIGNALS
from tools.services import free_port, port_free

REPO = Path(__file__).resolve().parents[2]
SHARED = ("MARKET_POSTGRES_URL", "MARKET_SHARED_HOME", "MARKET_CELERY_BROKER_URL")
WAIT_SECONDS = 240.0
STOP_WAIT_SECONDS = 30.0
# Beyond every bounded wait above, so the test's own clean-up always runs.
pytestmark = pytest.mark.timeout(600)


def make_env(**values: str) -> dict[str, str]:
    """The test's environment without any of the mode's variables or a data home of its own."""
    dropped = (*SHARED, "MARKET_DATA_HOME", "DAGSTER_HOME", "MAKEFLAGS", "MFLAGS")
    return {**{k: v for k, v in os.environ.items() if k not in dropped}, **values}


def make(target: str, env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [*DEFAULT_SIGNALS, "make", "-s", "--no-print-directory", target, *args],
            cwd=REPO, env=env,
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, process_group=0,
        )  # fmt: skip


def stop(process: subprocess.Popen[bytes], sig: signal.Signals, path: Path) -> list[int]:
    """Signal ``make`` alone, as systemd or ``kill`` does; the pids still using ``path`` once
    it had time to stop everything (those are then killed, so nothing outlives the test)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, sig)
    deadline = time.monotonic() + STOP_WAIT_SECONDS
    while processes_using(path) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = processes_using(path)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(STOP_WAIT_SECONDS)
    return left


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A folder PostgreSQL's own user may enter (pytest's tmp_path is private to root)."""
    root = Path(tempfile.mkdtemp(prefix="market-make-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_worker_refuses_without_a_broker(scratch: Path) -> None:
    home = scratch / "home"
    done = subprocess.run(
        ["make", "-s", "--no-print-directory", "worker"], cwd=REPO, capture_output=True,
        text=True, timeout=300, env=make_env(MARKET_DATA_HOME=str(home)),
    )  # fmt: skip
    assert done.returncode != 0
    assert "MARKET_CELERY_BROKER_URL is not set" in done.stderr
    assert not home.exists()  # refused before anything was written


def two_free_ports(besides: int) -> int:
    """A port whose next one is free too (the second API replica's), neither ``besides``."""
    for _ in range(50):
        port = free_port()
        if port < 65535 and besides not in (port, port + 1) and port_free(port + 1):
            return port
    raise AssertionError("no two adjacent free ports on 127.0.0.1")


def get_json(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=10) as answer:
        body: dict[str, object] = json.loads(answer.read())
        return body


def test_cluster_runs_every_piece_apart_and_stops_on_sigterm(scratch: Path) -> None:
    root = scratch / "cluster"
    dagster_port = free_port()
    api_port = two_free_ports(besides=dagster_port)
    log = scratch / "cluster.log"
    args = [f"CLUSTER_HOME={root}", f"DAGSTER_PORT={dagster_port}", f"MARKET_API_PORT={api_port}"]
    cluster = make("cluster", make_env(), log, *args)
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        while "cluster: ready" not in log.read_text() and time.monotonic() < deadline:
            assert cluster.poll() is None, log.read_text()[-5000:]
            time.sleep(0.5)
        banner = log.read_text()
        assert "cluster: ready" in banner, banner[-5000:]
        for port in (api_port, api_port + 1):
            assert get_json(f"http://127.0.0.1:{port}/health")["status"] == "ok"
        with urllib.request.urlopen(f"http://127.0.0.1:{dagster_port}/", timeout=10) as ui:
            assert ui.status == 200
        machines = root / "machines"
        assert sorted(p.name for p in machines.iterdir()) == [
            "api-1", "api-2", "dagster", "worker-1", "worker-2",
        ]  # fmt: skip
        for name in ("dagster", "worker-1", "worker-2"):
            assert (machines / name / "dagster" / "dagster.yaml").is_file()
        workers_by = time.monotonic() + WAIT_SECONDS  # "cluster: ready" waits for ports only
        for name in ("worker-1", "worker-2"):
            worker_log = machines / name / "logs" / f"{name}.log"
            while "ready" not in worker_log.read_text() and time.monotonic() < workers_by:
                time.sleep(0.5)
            assert "ready" in worker_log.read_text(), worker_log.read_text()[-3000:]
        redis_url = next(
            line.split()[1] for line in banner.splitlines() if line.startswith("Redis")
        )
        assert answering(redis_url, timeout=2.0) == [
            f"worker-1@{os.uname().nodename}",
            f"worker-2@{os.uname().nodename}",
        ]
        assert f"MARKET_SHARED_HOME={root / 'shared'}" in banner
    finally:
        assert stop(cluster, signal.SIGTERM, root) == [], log.read_text()[-5000:]
    # PostgreSQL (a daemon of pg_ctl's, outside make's group) is stopped too.
    assert not (root / "postgres" / "data" / "postmaster.pid").exists()
    assert [listeners(port) for port in (api_port, api_port + 1, dagster_port)] == [[], [], []]
