"""``make worker``: this machine becomes a Celery worker for the runs of every machine sharing
``MARKET_CELERY_BROKER_URL``.

It runs dagster-celery's own ``worker start`` with a config YAML that names the broker by
variable (so the file holds no URL), and stops the whole worker group on a signal, as ``serve``
does. See docs/design/operations-internals.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from market_core.atomic import write_text_atomic
from market_core.home import DataHome
from market_pipeline.cli.serve import (
    STOP_GRACE_SECONDS,
    Server,
    StopRequested,
    say,
    stop_all,
    wait_for_stop,
)
from market_pipeline.defs.executor import BROKER_VARIABLE

WORKER_CONFIG = """\
# Written by market_pipeline/cli/worker.py for `dagster-celery worker start -y`: the same block as
# the job's celery_executor config, so worker and runs meet on one broker and one result backend.
execution:
  config:
    broker:
      env: MARKET_CELERY_BROKER_URL
    backend:
      env: MARKET_CELERY_BROKER_URL
"""
VENV_BIN = Path(sys.executable).parent  # not resolved: the venv's bin, not the base Python's


class Group(Server):
    """A server whose exited members count as gone before they are reaped.

    Celery's worker outlives dagster-celery's wrapper as a zombie until init reaps it, which
    ``killpg(group, 0)`` cannot tell from a live process."""

    def group_alive(self) -> bool:
        if self.process.poll() is None:
            return True
        if not super().group_alive():
            return False
        proc = Path("/proc")
        if not proc.is_dir():  # no /proc (macOS): trust killpg
            return True
        for stat in proc.glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = stat.read_bytes().rsplit(b")", 1)[1].split()
                if int(fields[2]) == self.group and fields[0] != b"Z":
                    return True
        return False


class BrokerNotSet(RuntimeError):
    def __init__(self) -> None:
        super().__init__(
            f"{BROKER_VARIABLE} is not set: a worker takes its steps from a Celery broker; set it "
            "to the Redis every machine uses (e.g. redis://127.0.0.1:6379/0)"
        )


def broker_url(env: Mapping[str, str]) -> str:
    url = env.get(BROKER_VARIABLE, "").strip()
    if not url:
        raise BrokerNotSet
    return url


def with_venv_path(env: Mapping[str, str]) -> dict[str, str]:
    """dagster-celery starts ``celery`` by name: the venv's ``bin`` goes first."""
    return {**env, "PATH": os.pathsep.join(filter(None, [str(VENV_BIN), env.get("PATH")]))}


def write_worker_config(data_home: Path) -> Path:
    """``<data home>/celery/worker.yaml``: per machine, like everything the worker keeps."""
    path = data_home / "celery" / "worker.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != WORKER_CONFIG:
        write_text_atomic(path, WORKER_CONFIG)
    return path


def worker_command(config: Path, name: str | None = None) -> list[str]:
    """``dagster-celery worker start``; ``name`` becomes the Celery node name ``<name>@<host>``."""
    command = [str(VENV_BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app"]
    return [*command, "-y", str(config), *(["-n", name] if name else [])]


def run_worker(env: Mapping[str, str], name: str | None) -> int:
    """Check the broker, make sure the instance exists, then run the worker until a signal.

    Not an ``exec``: dagster-celery dies alone on SIGTERM and leaves its ``celery`` child
    serving, so the worker leads a group of its own and the signal goes to the whole group."""
    broker_url(env)
    from market_pipeline.cli.instance import dagster_home, open_instance  # Dagster loads only now

    open_instance().dispose()
    config = write_worker_config(DataHome.from_env().root)
    # dagster-celery opens the instance through DAGSTER_HOME, which only make sets.
    worker_env = with_venv_path({**env, "DAGSTER_HOME": str(dagster_home().resolve())})
    stop = StopRequested()
    stop.install()
    popen = subprocess.Popen(worker_command(config, name), env=worker_env, process_group=0)
    worker = Group("the worker", popen, signal.SIGTERM)
    ended: Server | None = None
    try:
        ended = wait_for_stop([worker], stop)
        if stop.signal is not None:
            say("worker", f"{stop.signal.name} received; stopping")
    finally:
        for killed in stop_all([worker]):
            say("worker", f"{killed} outlived {STOP_GRACE_SECONDS:.0f} s; killed")
    return 0 if ended is None else (popen.returncode or 1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m market_pipeline.cli.worker", description=__doc__
    )
    parser.add_argument("--name", help="the Celery node name (default: dagster-<random>)")
    args = parser.parse_args(argv)
    try:
        return run_worker(os.environ, args.name)
    except BrokerNotSet as exc:
        say("worker", str(exc))
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
