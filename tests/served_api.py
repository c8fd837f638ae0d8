"""The API as users run it: the ``make api`` command (granian) on a free loopback port.

Shared by the API's end-to-end test and the reliability suite."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import requests

from market_core.home import DataHome
from tests.reliability.processes import REPO, clean_env

START_SECONDS = 60.0
GRANIAN = Path(sys.executable).with_name("granian")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def make_api_command(port: int, **api_env: str) -> list[str]:
    """The `make api` recipe (from `make -n`, with ``api_env`` in its environment: the host,
    workers and TLS files become flags), so this runs exactly what the Makefile runs."""
    if shutil.which("make") is None:
        return [str(GRANIAN), "--interface", "asgi", "--factory", "--host", "127.0.0.1",
                "--port", str(port), "--workers", "1", "--no-ws",
                "market_api.app:create_app"]  # fmt: skip
    # Without the flags of a make we may run under (`make test`): its jobserver is not ours.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    env.update(api_env)
    dry = subprocess.run(
        ["make", "-s", "-n", "api", f"MARKET_API_PORT={port}"],
        cwd=REPO, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    recipe = dry.stdout.replace("\\\n", " ")
    line = next(line for line in recipe.splitlines() if "granian" in line)
    command = shlex.split(line)
    return [str(GRANIAN), *command[1:]]  # the granian of the interpreter running the tests


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
    """Start the API on ``home``; stop it (SIGTERM, then SIGKILL) on the way out. With
    ``MARKET_API_TLS_CERT`` in ``env`` it is https, that certificate trusted as its own CA."""
    port = free_port()
    cert = env.get("MARKET_API_TLS_CERT")
    scheme = "https" if cert else "http"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            make_api_command(port, **env), cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
            env=clean_env(MARKET_DATA_HOME=str(home.root), **env),
        )  # fmt: skip
        served = Served(f"{scheme}://127.0.0.1:{port}", proc)
        try:
            deadline = time.monotonic() + START_SECONDS
            while True:
                assert proc.poll() is None, log.read_text()
                with contextlib.suppress(requests.ConnectionError, requests.Timeout):
                    health = requests.get(f"{served.base}/health", timeout=5, verify=cert or True)
                    if health.status_code == 200:
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
