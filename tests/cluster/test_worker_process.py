"""``make worker`` owns its processes: whatever ends ``make``, the Celery worker it started stops
taking tasks (a warm shutdown), and it runs with the Celery settings the runs share."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from celery import Celery

from market_pipeline.defs.executor import BROKER_VARIABLE, CELERY_SETTINGS
from tests.cluster.services import RedisService
from tests.cluster.test_make_targets import STOP_WAIT_SECONDS, WAIT_SECONDS, make, make_env
from tests.cluster.workers import answering, processes_using

WARM_SHUTDOWN = "Warm shutdown (MainProcess)"  # what Celery prints as it starts one
URL_CONFIGS = Path("dagster_celery", "config")
# Beyond every bounded wait above, so the test's own clean-up always runs.
pytestmark = pytest.mark.timeout(600)


@dataclass
class MakeWorker:
    """A ``make worker`` that answered the broker's ping, in a data home of its own."""

    home: Path
    broker: str
    log: Path
    process: subprocess.Popen[bytes]
    node: str

    def output(self) -> str:
        return self.log.read_text()[-3000:]

    def left_after_stop(self) -> list[int]:
        """The pids of the data home still running once they had time to stop (none, or they
        are killed here, so that nothing outlives the test)."""
        deadline = time.monotonic() + STOP_WAIT_SECONDS
        while processes_using(self.home) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = processes_using(self.home)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(STOP_WAIT_SECONDS)
        return left


@pytest.fixture
def worker(tmp_path: Path, redis: RedisService) -> Iterator[MakeWorker]:
    broker = redis.fresh_database()
    home = tmp_path / "home"
    log = tmp_path / "worker.log"
    # What `dagster-celery worker start` left under the Dagster home when earlier versions ran it.
    left_by_dagster_celery = home / "dagster" / URL_CONFIGS / "0" / "dagster_celery_config.py"
    left_by_dagster_celery.parent.mkdir(parents=True)
    left_by_dagster_celery.write_text(f"broker_url = {broker!r}\n")
    process = make("worker", make_env(MARKET_DATA_HOME=str(home), **{BROKER_VARIABLE: broker}), log)
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        nodes: list[str] = []
        while not nodes and process.poll() is None and time.monotonic() < deadline:
            nodes = answering(broker)
        assert len(nodes) == 1, log.read_text()[-3000:]
        yield MakeWorker(home, broker, log, process, nodes[0])
    finally:
        for pid in processes_using(home):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(STOP_WAIT_SECONDS)


def test_sigkill_of_make_alone_stops_the_worker(worker: MakeWorker) -> None:
    """The kernel sends the worker SIGTERM as ``make`` dies (PR_SET_PDEATHSIG)."""
    os.kill(worker.process.pid, signal.SIGKILL)
    assert worker.left_after_stop() == [], worker.output()
    assert answering(worker.broker) == []
    assert WARM_SHUTDOWN in worker.output()


@pytest.mark.parametrize("to_group", [False, True], ids=["sigterm-to-make", "ctrl-c-to-group"])
def test_sigterm_or_ctrl_c_is_a_warm_shutdown(worker: MakeWorker, to_group: bool) -> None:
    """SIGTERM to ``make`` alone (as ``kill`` or systemd sends it: make passes it on to its
    child), or Ctrl-C (SIGINT to the terminal's whole foreground group)."""
    if to_group:
        os.killpg(worker.process.pid, signal.SIGINT)  # make leads its group, as in a terminal
    else:
        os.kill(worker.process.pid, signal.SIGTERM)
    assert worker.left_after_stop() == [], worker.output()
    assert answering(worker.broker) == []
    assert WARM_SHUTDOWN in worker.output()


def test_the_worker_runs_with_the_shared_settings(
    worker: MakeWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = Celery("probe", broker=worker.broker)
    try:
        inspect = app.control.inspect([worker.node], timeout=10.0, limit=1)
        conf = (inspect.conf() or {}).get(worker.node, {})
    finally:
        app.close()
    assert conf.get("task_track_started") is True, conf
    assert conf.get("worker_disable_prefetch") is True, conf
    assert {name: conf.get(name) for name in CELERY_SETTINGS} == CELERY_SETTINGS
    assert worker.node.startswith("dagster-")
    assert (worker.home / "dagster" / "dagster.yaml").is_file()
    assert not (worker.home / "dagster" / URL_CONFIGS).exists()  # removed: they held the URL

    path = worker.home / "celery" / "dagster_celery_config.py"
    text = path.read_text()
    assert worker.broker not in text and "redis://" not in text  # the broker by variable only
    monkeypatch.setenv(BROKER_VARIABLE, worker.broker)
    spec = importlib.util.spec_from_file_location("dagster_celery_config", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # What make_app's conf.update applies: the settings, nothing else of the module's.
    assert dir(module) == sorted(["broker_url", "result_backend", *CELERY_SETTINGS])
    assert module.broker_url == module.result_backend == worker.broker
