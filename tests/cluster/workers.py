"""Celery workers as the fault tests use them: started as ``make worker`` starts them, each with a
data home of its own, and lost the way a machine is lost (every process, kill -9)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from celery import Celery
from dagster import EventLogEntry

from market_core.lake import LakeSettings, connect
from tests.cluster.machines import REPO, machine_env
from tests.conftest import TEST_KEY
from tests.pipeline.helpers import recent_bars
from tests.stubs.alpha_vantage import AlphaVantageStub

READY_SECONDS = 120.0
STOP_SECONDS = 30.0


def processes_using(path: Path) -> list[int]:
    """Live processes whose command line or environment names ``path``: all that a machine
    started there, whatever group or session they moved to."""
    found = []
    needle = str(path).encode()
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, IndexError):
            state = (proc / "stat").read_bytes().rsplit(b")", 1)[1].split()[0]
            seen = (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes()
            if state != b"Z" and needle in seen:
                found.append(int(proc.name))
    return found


def answering(broker: str, timeout: float = 1.0) -> list[str]:
    """The node names of the workers answering Celery's ping on ``broker``."""
    app = Celery("probe", broker=broker)
    try:
        replies = app.control.ping(timeout=timeout) or []
    finally:
        app.close()
    return sorted(name for reply in replies for name in reply)


@dataclass
class Worker:
    name: str
    home: Path
    log: Path
    process: subprocess.Popen[bytes]

    def node(self, broker: str) -> str | None:
        return next((n for n in answering(broker) if n.startswith(f"{self.name}@")), None)

    def lose(self) -> None:
        """kill -9 of every process of this machine, at once, as when it loses power."""
        for _ in range(3):  # a pool process the first sweep missed while it was being forked
            for pid in processes_using(self.home):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(STOP_SECONDS)
        self.lose()


@dataclass
class Machines:
    """The workers a test started; every one is stopped however the test ends."""

    root: Path
    shared: Mapping[str, str]
    extra: Mapping[str, str]
    started: list[Worker] = field(default_factory=list)

    def worker(self, name: str) -> Worker:
        """``make worker`` on a new machine, answering the broker's ping when this returns."""
        home = self.root / name
        env = machine_env(home, self.shared, **self.extra)
        log = self.root / f"{name}.log"
        with log.open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "market_pipeline.cli.worker", "--name", name],
                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        worker = Worker(name, home, log, process)
        self.started.append(worker)
        broker = self.shared["MARKET_CELERY_BROKER_URL"]
        deadline = time.monotonic() + READY_SECONDS
        while worker.node(broker) is None:
            assert process.poll() is None, f"{name} exited:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"{name} never answered:\n{log.read_text()[-3000:]}"
            time.sleep(0.3)
        return worker

    def launch(self, module: str, symbols: Sequence[str]) -> subprocess.Popen[str]:
        """``make ingest`` (or ``make retry-failed``: ``market_pipeline.cli.retry``) on a machine
        of its own, its output and errors in one pipe."""
        env = machine_env(
            self.root / "launcher", self.shared, MARKET_SYMBOLS=",".join(symbols), **self.extra
        )
        return subprocess.Popen(
            [sys.executable, "-m", module], cwd=REPO, env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def ended(self, launcher: subprocess.Popen[str], timeout: float) -> tuple[int, str]:
        """The launcher's exit code and output; a launcher still running after ``timeout`` hung."""
        try:
            out, _ = launcher.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            launcher.kill()
            out, _ = launcher.communicate()
            pytest.fail(f"the launcher hung:\n{out[-6000:]}\n{self.logs()}")
        return launcher.returncode, out

    def logs(self) -> str:
        return "\n".join(f"--- {w.name} ---\n{w.log.read_text()[-4000:]}" for w in self.started)


@contextlib.contextmanager
def machines(root: Path, shared: Mapping[str, str], **extra: str) -> Iterator[Machines]:
    started = Machines(root, shared, extra)
    try:
        yield started
    finally:
        for worker in started.started:
            worker.stop()


@contextlib.contextmanager
def cluster_for(
    tmp_path: Path,
    shared: Mapping[str, str],
    stub: AlphaVantageStub,
    monkeypatch: pytest.MonkeyPatch,
    workers: Sequence[str],
) -> Iterator[Machines]:
    """``workers`` up, a key allowing 10 calls a second (a step lasts long enough to be cut in
    the middle), and this test process observing as a machine of its own."""
    observe(shared, tmp_path / "observer", monkeypatch)
    with machines(tmp_path, shared, **key_env(stub.url, per_second=10, per_day=20_000)) as m:
        for name in workers:
            m.worker(name)
        yield m


def key_env(stub_url: str, per_second: int = 20, per_day: int = 500) -> dict[str, str]:
    """A key with limits, so that every machine's calls take permits from PostgreSQL."""
    limits = {"SECOND": str(per_second), "MINUTE": "0", "DAY": str(per_day)}
    limit_vars = {f"ALPHAVANTAGE_REQUESTS_PER_{k}": v for k, v in limits.items()}
    return {"ALPHAVANTAGE_API_KEY": TEST_KEY, "ALPHAVANTAGE_BASE_URL": stub_url, **limit_vars}


def lake_closes(symbols: Iterable[str]) -> dict[str, list[tuple[str, float]]]:
    """Each symbol's (day, close) in the lake the environment names, oldest first."""
    settings = LakeSettings.from_env()
    assert settings is not None, "lake mode"
    wanted = sorted(set(symbols))
    with connect(settings, read_only=True) as conn:
        rows = conn.execute(
            "SELECT symbol, strftime(timestamp, '%Y-%m-%d'), close FROM ohlcv_data "
            "WHERE list_contains(?, symbol) ORDER BY symbol, timestamp",
            [wanted],
        ).fetchall()
    found: dict[str, list[tuple[str, float]]] = {s: [] for s in wanted}
    for symbol, day, close in rows:
        found[symbol].append((day, float(close)))
    return found


def served_closes(bars: list[tuple[str, dict[str, str]]]) -> list[tuple[str, float]]:
    return [(day, float(values["4. close"])) for day, values in bars]


def celery_worker(entry: EventLogEntry) -> str | None:
    """The node named by dagster-celery's "Executing steps ... in celery worker" event."""
    event = entry.dagster_event
    if event is None or "in celery worker" not in (event.message or ""):
        return None
    return str(event.engine_event_data.metadata["Celery worker"].value)


Bars = dict[str, list[tuple[str, dict[str, str]]]]


def serve_bars(stub: AlphaVantageStub, symbols: Iterable[str], count: int = 30) -> Bars:
    """Distinct valid bars for each symbol, set on the stub; what the lake must hold after."""
    served = {s: recent_bars(count, start_price=5.0 + n) for n, s in enumerate(symbols)}
    for symbol, rows in served.items():
        stub.set_bars(symbol, rows)
    return served


def observe(shared: Mapping[str, str], home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """This test process reads what the machines left, as a machine of its own."""
    for name, value in shared.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MARKET_DATA_HOME", str(home))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
