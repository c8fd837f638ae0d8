"""The two processes ``dagster dev`` runs (``make dagster``), started apart for e2e tests.

The webserver serves the UI's GraphQL API on a free loopback port; the daemon (schedules,
sensors, backfills, run queue) starts when the test asks for it, so that a backfill launched
before is picked up by the daemon's first pass instead of its next one, 30 s later. Each runs in
its own process group with the given environment only; every wait is bounded; on exit both
groups, including the runs the daemon launched, are stopped.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import requests

from tests.conftest import ENV_VARS

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


class DagsterServerError(AssertionError):
    """The server did not start, answered with an error, or a wait ran out of time."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _signal_group(group: int, signum: signal.Signals) -> bool:
    try:
        os.killpg(group, signum)
    except ProcessLookupError:
        return False
    return True


class DagsterServer:
    def __init__(self, env: Mapping[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/graphql"
        self.log_path = log_path
        self._env = {**{k: v for k, v in os.environ.items() if k not in ENV_VARS}, **env}
        self._processes: list[subprocess.Popen[bytes]] = []

    def _start(self, program: str, *args: str) -> None:
        command = [str(Path(sys.executable).with_name(program)), *args, "-w", "workspace.yaml"]
        with open(self.log_path, "ab") as log:
            process = subprocess.Popen(
                command, cwd=REPO, env=self._env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        self._processes.append(process)

    def __enter__(self) -> DagsterServer:
        self._start("dagster-webserver", "-h", "127.0.0.1", "-p", str(self.port))
        try:
            self.wait_for(self._location_loaded, timeout=120, what="the code location to load")
        except BaseException:
            self.__exit__()
            raise
        return self

    def start_daemon(self) -> None:
        self._start("dagster-daemon", "run")

    def __exit__(self, *exc: object) -> None:
        for process in reversed(self._processes):
            # Its own session, so its group id is its pid: it and everything it started.
            if _signal_group(process.pid, signal.SIGTERM):
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    _signal_group(process.pid, signal.SIGKILL)
                    process.wait(timeout=10)

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def query(self, text: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        response = requests.post(
            self.url, json={"query": text, "variables": dict(variables or {})}, timeout=30
        )
        body: dict[str, Any] = response.json()
        if response.status_code != 200 or body.get("errors"):
            raise DagsterServerError(f"GraphQL error {response.status_code}: {body}")
        return dict(body["data"])

    def wait_for(self, probe: Callable[[], T | None], *, timeout: float, what: str) -> T:
        """Poll ``probe`` until it returns something other than ``None``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self._processes):
                raise DagsterServerError(f"a Dagster process exited:\n{self.log_tail()}")
            try:
                value = probe()
            except (requests.ConnectionError, requests.Timeout):
                value = None
            if value is not None:
                return value
            time.sleep(0.5)
        raise DagsterServerError(f"gave up after {timeout:.0f}s waiting for {what}:\n"
                                 f"{self.log_tail()}")  # fmt: skip

    def _location_loaded(self) -> bool | None:
        data = self.query(
            "{ workspaceOrError { ... on Workspace { locationEntries { loadStatus "
            "locationOrLoadError { __typename ... on PythonError { message } } } } } }"
        )
        entries = data["workspaceOrError"].get("locationEntries") or []
        for entry in entries:
            error = entry["locationOrLoadError"] or {}
            if error.get("__typename") == "PythonError":
                raise DagsterServerError(f"code location failed to load: {error['message']}")
        loaded = entries and all(e["loadStatus"] == "LOADED" for e in entries)
        return True if loaded else None
