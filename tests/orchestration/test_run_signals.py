"""``make run`` stops, every process of it, on SIGTERM (systemd, docker) as on Ctrl-C.

``make run`` is started as users and supervisors start it, in its own process group, on a fresh
data home with one symbol from the offline sample. Once the API and the Dagster UI answer, the
signal goes to the whole group (systemd, Ctrl-C) or to ``make`` alone (docker stop). The
processes are then found by their environment, which names this test's own data home: the
webserver, the daemon and the code servers carry it even if they left the group.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.services import listeners
from tests.conftest import ENV_VARS
from tests.launch import DEFAULT_SIGNALS

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
STARTUP_SECONDS = 240.0
STOP_SECONDS = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def processes_of(home: Path) -> list[int]:
    """Every process whose environment holds ``MARKET_DATA_HOME=<home>``."""
    marker = f"MARKET_DATA_HOME={home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone, or not ours
            continue
        if marker in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def left_after(home: Path, seconds: float) -> list[int]:
    """The processes of ``home`` still there once they are all gone or ``seconds`` passed."""
    deadline = time.monotonic() + seconds
    while (left := processes_of(home)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


class Run:
    def __init__(self, home: Path, output: int | None = None) -> None:
        """``output``: a file descriptor for make's stdout and stderr (default: a log file)."""
        self.home = home
        self.api_port, self.dagster_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
        env |= {
            "MARKET_DATA_HOME": str(home), "MARKET_SYMBOLS": "AAPL",
            "MARKET_API_PORT": str(self.api_port), "DAGSTER_PORT": str(self.dagster_port),
        }  # fmt: skip
        self.log = (home.parent / "make-run.log").open("w")
        self.process = subprocess.Popen(
            [*DEFAULT_SIGNALS, "make", "--no-print-directory", "run"], cwd=REPO, env=env,
            stdout=self.log if output is None else output, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def output(self) -> str:
        self.log.flush()
        return (self.home.parent / "make-run.log").read_text()

    def wait_until_serving(self) -> None:
        api = f"http://127.0.0.1:{self.api_port}/health"
        dagster = f"http://127.0.0.1:{self.dagster_port}/server_info"
        deadline = time.monotonic() + STARTUP_SECONDS
        while not (answers(api) and answers(dagster)):
            assert self.process.poll() is None, f"make run ended early:\n{self.output()}"
            assert time.monotonic() < deadline, f"not serving in time:\n{self.output()}"
            time.sleep(1)

    def left_after(self, seconds: float) -> list[int]:
        return left_after(self.home, seconds)


@pytest.fixture
def make_run(tmp_path: Path) -> Iterator[Run]:
    run = Run(tmp_path / "home")
    yield run
    for pid in processes_of(run.home):  # a failed test leaves nothing running
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    run.process.wait(timeout=10)
    run.log.close()


def command_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")[:160].decode()
    except OSError:
        return "(gone)"


@pytest.mark.parametrize(
    ("stop", "to_group"),
    [
        pytest.param(signal.SIGTERM, True, id="SIGTERM-group"),
        pytest.param(signal.SIGINT, True, id="SIGINT-group", marks=pytest.mark.reliability),
        pytest.param(signal.SIGTERM, False, id="SIGTERM-make", marks=pytest.mark.reliability),
    ],
)
def test_a_stop_signal_to_make_run_stops_every_process_it_started(
    make_run: Run, stop: signal.Signals, to_group: bool
) -> None:
    make_run.wait_until_serving()
    output = make_run.output()
    assert f"Dagster UI:  http://127.0.0.1:{make_run.dagster_port}" in output
    assert f"API:         http://127.0.0.1:{make_run.api_port}/instruments" in output
    serving = processes_of(make_run.home)
    assert len(serving) >= 5, "make, the API, dagster dev, its webserver and daemon at least"
    if to_group:  # systemd, a supervisor, Ctrl-C in a terminal
        os.killpg(make_run.process.pid, stop)
    else:  # docker stop: the signal reaches PID 1 alone
        os.kill(make_run.process.pid, stop)
    left = make_run.left_after(STOP_SECONDS)
    assert not left, f"{STOP_SECONDS:.0f} s after {stop.name}: {[command_of(p) for p in left]}"


@pytest.mark.reliability
def test_ctrl_c_stops_make_run_whose_output_pipe_lost_its_reader(tmp_path: Path) -> None:
    """``make run 2>&1 | tee run.log``, then Ctrl-C: tee dies with the same Ctrl-C, and the
    supervisor's first message meets a dead pipe. Everything must stop all the same."""
    home = tmp_path / "home"
    read_end, write_end = os.pipe()
    reader = subprocess.Popen(["tee", "-a", str(tmp_path / "make-run.log")], stdin=read_end,
                              stdout=subprocess.DEVNULL)  # fmt: skip
    run = Run(home, output=write_end)
    os.close(read_end)
    os.close(write_end)
    try:
        run.wait_until_serving()
        assert len(processes_of(home)) >= 5
        reader.kill()  # SIGKILL first, so the supervisor's first write surely meets no reader
        reader.wait(timeout=10)
        os.killpg(run.process.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole group
        left = run.left_after(STOP_SECONDS)
        assert not left, f"{STOP_SECONDS:.0f} s after Ctrl-C: {[command_of(p) for p in left]}"
        assert [listeners(port) for port in (run.api_port, run.dagster_port)] == [[], []]
    finally:
        for pid in processes_of(home):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            run.process.wait(timeout=10)
        reader.kill()
        reader.wait(timeout=10)
        run.log.close()


def test_the_supervisor_stops_its_children_when_its_output_has_no_reader(tmp_path: Path) -> None:
    """The same defect without ``make run``'s servers: two sleeps under the supervisor, whose
    stdout and stderr are a pipe nobody reads any more."""
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    env["MARKET_DATA_HOME"] = str(home)  # how processes_of finds the children
    read_end, write_end = os.pipe()
    os.close(read_end)
    command = ["-m", "market_pipeline.cli.serve", "--api", "sleep 300", "--dagster", "sleep 301"]
    supervisor = subprocess.Popen([sys.executable, *command], cwd=REPO, env=env,
                                  stdout=write_end, stderr=write_end)  # fmt: skip
    os.close(write_end)
    try:
        deadline = time.monotonic() + 60
        while len(processes_of(home)) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(processes_of(home)) == 3, "the supervisor and its two children"
        supervisor.send_signal(signal.SIGINT)
        assert supervisor.wait(timeout=STOP_SECONDS) == 0
        left = left_after(home, STOP_SECONDS)
        assert not left, [command_of(p) for p in left]
    finally:
        for pid in processes_of(home):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        supervisor.wait(timeout=10)
