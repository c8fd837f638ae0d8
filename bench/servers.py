"""The three HTTP servers of the API benchmarks, each started as its own process on loopback.

On a two-core machine the server under test and the load generator would otherwise fight for
the same core; every server is pinned to ``SERVER_CPU`` and wrk to ``LOAD_CPU`` (taskset), so
each gets one core and the comparison is between servers given the same single core.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.harness import BENCH_DIR, WORK_DIR

SERVER_CPU = "1"
LOAD_CPU = "0"
BIN = Path(sys.executable).parent
START_TIMEOUT = 60.0


@dataclass
class Server:
    name: str
    argv: list[str]
    env: dict[str, str]
    port: int
    process: subprocess.Popen[bytes] | None = None
    cpu: str | None = SERVER_CPU
    """The CPU it is pinned to; None: any (several workers on several cores)."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pids(self) -> list[int]:
        """The server's process and its children (granian's worker)."""
        if self.process is None:
            return []
        parent = psutil.Process(self.process.pid)
        return [parent.pid, *(p.pid for p in parent.children(recursive=True))]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(cpu: str, argv: list[str]) -> list[str]:
    """``argv`` run on one CPU, where taskset exists and the machine has more than one."""
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", cpu, *argv]
    return argv


def _granian(app: str, port: int, *factory: str) -> list[str]:
    return [str(BIN / "granian"), "--interface", "asgi", *factory, "--host", "127.0.0.1",
            "--port", str(port), "--workers", "1", "--no-ws", app]  # fmt: skip


def ours(home: Path, **env: str) -> Server:
    """``make api``: granian, one worker, the app factory, over the data home ``home``."""
    port = free_port()
    argv = _granian("market_api.app:create_app", port, "--factory")
    return Server("ours", argv, {"MARKET_DATA_HOME": str(home), **env}, port)


def floor() -> Server:
    port = free_port()
    return Server("floor", _granian("bench.baselines.litestar_hello:app", port), {}, port)


def baseline(duckdb_path: Path) -> Server:
    port = free_port()
    argv = [str(BIN / "uvicorn"), "bench.baselines.fastapi_app:app", "--host", "127.0.0.1",
            "--port", str(port), "--workers", "1", "--loop", "uvloop", "--http", "httptools",
            "--no-access-log", "--log-level", "warning"]  # fmt: skip
    return Server("baseline", argv, {"BASELINE_DUCKDB": str(duckdb_path)}, port)


def _ready(server: Server) -> bool:
    try:
        with urllib.request.urlopen(server.url + "/health", timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def start(server: Server) -> None:
    env = {**os.environ, "PYTHONPATH": str(BENCH_DIR.parent), **server.env}
    log = (WORK_DIR / f"server-{server.name}.log").open("wb")
    argv = pinned(server.cpu, server.argv) if server.cpu else server.argv
    server.process = subprocess.Popen(
        argv, env=env, stdout=log, stderr=subprocess.STDOUT,
        cwd=BENCH_DIR.parent, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + START_TIMEOUT
    while not _ready(server):
        if server.process.poll() is not None or time.monotonic() > deadline:
            stop(server)
            raise RuntimeError(f"{server.name} did not start; see {log.name}")
        time.sleep(0.1)


def stop(server: Server) -> None:
    process, server.process = server.process, None
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


@contextlib.contextmanager
def running(*servers: Server) -> Iterator[None]:
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    try:
        for server in servers:
            start(server)
        yield
    finally:
        for server in servers:
            stop(server)
