"""The API as users run it: the ``make api`` command (granian) on a free loopback port."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import requests

from market_core.home import DataHome
from tests.api.test_e2e import free_port, make_api_command
from tests.reliability.processes import REPO, clean_env

START_SECONDS = 60.0


@dataclass(frozen=True)
class Served:
    base: str
    proc: subprocess.Popen[bytes]

    def processes(self) -> list[psutil.Process]:
        """granian's main process and its workers."""
        main = psutil.Process(self.proc.pid)
        return [main, *main.children(recursive=True)]

    def rss(self) -> int:
        """Resident memory of the whole server, in bytes."""
        total = 0
        for process in self.processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                total += process.memory_info().rss
        return total

    def listening(self) -> set[str]:
        """Every address a server process listens on."""
        return {f"{c.laddr.ip}:{c.laddr.port}" for p in self.processes()
                for c in p.net_connections("tcp") if c.status == psutil.CONN_LISTEN}  # fmt: skip


@contextlib.contextmanager
def serve(home: DataHome, log: Path, **env: str) -> Iterator[Served]:
    """Start the API on ``home``; stop it (SIGTERM, then SIGKILL) on the way out."""
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            make_api_command(port), cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
            env=clean_env(MARKET_DATA_HOME=str(home.root), **env),
        )  # fmt: skip
        served = Served(f"http://127.0.0.1:{port}", proc)
        try:
            deadline = time.monotonic() + START_SECONDS
            while True:
                assert proc.poll() is None, log.read_text()
                with contextlib.suppress(requests.ConnectionError):
                    if requests.get(f"{served.base}/health", timeout=5).status_code == 200:
                        break
                assert time.monotonic() < deadline, f"the API did not start: {log.read_text()}"
                time.sleep(0.1)
            yield served
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)
