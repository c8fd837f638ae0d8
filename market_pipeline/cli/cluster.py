"""``make worker`` and ``make cluster``: the multi-machine mode's processes on this machine.

``worker`` turns this machine into a Celery worker for dagster-celery: it runs the steps of runs
launched on any machine that shares ``MARKET_CELERY_BROKER_URL``. It goes through dagster-celery's
own ``dagster-celery worker start`` with ``-A dagster_celery.app`` and a config YAML holding the
same ``execution: config:`` block as the job's ``celery_executor`` (broker and result backend both
on ``MARKET_CELERY_BROKER_URL``, named by variable, so the file holds no URL). The YAML lives under
the machine's data home, and the venv's ``bin`` goes first on ``PATH``: dagster-celery starts
``celery`` by name. A stop signal reaches the whole worker, as in ``serve``.

``demo`` is the one-box cluster: PostgreSQL, Redis, two workers, the Dagster webserver and daemon,
and two API replicas, as separate processes. Each "machine" has a data home of its own under one
folder and shares with the others nothing but the three variables (``MARKET_POSTGRES_URL``,
``MARKET_SHARED_HOME``, ``MARKET_CELERY_BROKER_URL``). Stopping reuses ``serve``: each process
leads its own group, the first SIGTERM/SIGINT/SIGHUP stops every group, and whatever outlives the
grace is killed; PostgreSQL and Redis stop last, so everything is gone within 10 s.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from market_core.atomic import write_text_atomic
from market_core.home import SHARED_HOME_VAR, DataHome
from market_core.lake import POSTGRES_URL_VAR, LakeError, LakeSettings, connect
from market_pipeline.cli.serve import (
    POLL_SECONDS,
    STOP_GRACE_SECONDS,
    Server,
    StopRequested,
    stop_all,
    wait_for_stop,
)
from market_pipeline.defs.executor import BROKER_VARIABLE
from tools.services import (
    PostgresServer,
    RedisServer,
    ServiceError,
    reachable_postgres_folder,
    start_postgres,
    start_redis,
)

SHARED_VARIABLES = (POSTGRES_URL_VAR, SHARED_HOME_VAR, BROKER_VARIABLE)
DAGSTER_MACHINES = ("dagster", "worker-1", "worker-2")
API_MACHINES = ("api-1", "api-2")
MACHINE_VARIABLES = ("MARKET_DATA_HOME", "DAGSTER_HOME", "MARKET_API_PORT", "DAGSTER_PORT")
WORKER_CONFIG = """\
# Written by market_pipeline/cluster.py for `dagster-celery worker start -y`: the same block as
# the job's celery_executor config, so worker and runs meet on one broker and one result backend.
execution:
  config:
    broker:
      env: MARKET_CELERY_BROKER_URL
    backend:
      env: MARKET_CELERY_BROKER_URL
"""
# The children get this long to stop, PostgreSQL and Redis a little more: within 10 s in all.
CHILD_STOP_GRACE_SECONDS = 5.0
READY_TIMEOUT_SECONDS = 180.0
INSTANCE_TIMEOUT_SECONDS = 180.0
REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent  # not resolved: the venv's bin, not the base Python's


class Group(Server):
    """A server whose exited members count as gone before they are reaped.

    dagster-celery's wrapper dies at once on SIGTERM; the ``celery`` it started exits after its
    warm shutdown and stays a zombie until init reaps it, which ``killpg(group, 0)`` cannot tell
    from a live process: the stop would wait out its whole grace and report a kill."""

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


class ClusterError(RuntimeError):
    """The worker or the demo cluster cannot start as asked."""


class BrokerNotSet(ClusterError):
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

    Not an ``exec``: dagster-celery runs ``celery`` as a child and dies alone on SIGTERM, leaving
    that child serving. Like ``serve``, the worker leads a group of its own here, and the first
    SIGTERM/SIGINT/SIGHUP goes to the whole group (Celery's warm shutdown)."""
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
    ended = wait_for_stop([worker], stop)
    if stop.signal is not None:
        print(f"worker: {stop.signal.name} received; stopping", file=sys.stderr)
    for killed in stop_all([worker]):
        print(f"worker: {killed} outlived {STOP_GRACE_SECONDS:.0f} s; killed", file=sys.stderr)
    return 0 if ended is None else (popen.returncode or 1)


@dataclass(frozen=True)
class Machine:
    """One pretend machine: a data home of its own, and the shared variables."""

    name: str
    home: Path

    def env(self, shared: Mapping[str, str], base: Mapping[str, str]) -> dict[str, str]:
        own = {k: v for k, v in base.items() if k not in (*SHARED_VARIABLES, *MACHINE_VARIABLES)}
        dagster_home = str(self.home / "dagster")
        machine = {"MARKET_DATA_HOME": str(self.home), "DAGSTER_HOME": dagster_home}
        return with_venv_path({**own, **shared, **machine})

    def log(self, process: str) -> Path:
        path = self.home / "logs" / f"{process}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path


@dataclass(frozen=True)
class Process:
    name: str
    machine: Machine
    command: list[str]
    stop_signal: signal.Signals
    port: int | None = None


def machines(root: Path) -> list[Machine]:
    return [Machine(name, root / "machines" / name) for name in DAGSTER_MACHINES + API_MACHINES]


def demo_processes(root: Path, dagster_port: int, api_port: int) -> list[Process]:
    """The webserver and daemon share the ``dagster`` machine; every other process has its own."""
    by_name = {machine.name: machine for machine in machines(root)}
    workspace = ["-w", str(REPO / "workspace.yaml")]
    webserver = [str(VENV_BIN / "dagster-webserver"), *workspace, "-h", "127.0.0.1"]
    daemon = [str(VENV_BIN / "dagster-daemon"), "run", *workspace]
    granian = [str(VENV_BIN / "granian"), "--interface", "asgi", "--factory", "--host", "127.0.0.1"]
    api = ["--workers", "1", "--no-ws", "market_api.app:create_app"]
    dagster = by_name["dagster"]
    processes = [
        Process("dagster-webserver", dagster, [*webserver, "-p", str(dagster_port)], signal.SIGINT,
                dagster_port),
        Process("dagster-daemon", dagster, daemon, signal.SIGINT),
    ]  # fmt: skip
    for name in ("worker-1", "worker-2"):
        home = by_name[name].home
        command = worker_command(write_worker_config(home), name)
        processes.append(Process(name, by_name[name], command, signal.SIGTERM))
    for name, port in (("api-1", api_port), ("api-2", api_port + 1)):
        command = [*granian, "--port", str(port), *api]
        processes.append(Process(name, by_name[name], command, signal.SIGTERM, port))
    return processes


def spawn(process: Process, shared: Mapping[str, str]) -> Server:
    """Started in a group of its own (as ``serve.start`` does), with its machine's environment
    and its output in ``<data home>/logs/<name>.log``."""
    env = process.machine.env(shared, os.environ)
    with process.machine.log(process.name).open("ab") as log:
        popen = subprocess.Popen(
            process.command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, process_group=0,
        )  # fmt: skip
    return Group(process.name, popen, process.stop_signal)


def create_instances(machines: Sequence[Machine], shared: Mapping[str, str]) -> None:
    """Each Dagster machine's ``dagster.yaml``, written and opened before anything uses it."""
    command = [sys.executable, "-m", "market_pipeline.cli.instance"]
    running = [
        (m, subprocess.Popen(command, cwd=REPO, env=m.env(shared, os.environ),
                             stdout=m.log("instance").open("ab"), stderr=subprocess.STDOUT))
        for m in machines
    ]  # fmt: skip
    for machine, process in running:
        try:
            code = process.wait(INSTANCE_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        if code != 0:
            raise ClusterError(
                f"the Dagster instance of {machine.name} could not be opened (exit {code}); "
                f"see {machine.log('instance')}"
            )


def create_lake(root: Path, shared: Mapping[str, str]) -> None:
    """The lake's catalog and tables, made once before any machine opens it, as provisioning a
    deployment would: five processes opening a fresh catalog at the same moment need not."""
    settings = LakeSettings.from_env(shared)
    if settings is None:  # pragma: no cover - the demo always sets MARKET_POSTGRES_URL
        return
    extensions = root / "provisioning" / "duckdb_extensions"
    connect(replace(settings, extension_dir=extensions)).close()


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def wait_until_ready(servers: Sequence[Server], ports: Sequence[int], stop: StopRequested) -> bool:
    """Until every port answers (True), or a stop, a child's exit or the timeout (False)."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    waiting = list(ports)
    while waiting and stop.signal is None and time.monotonic() < deadline:
        if any(server.process.poll() is not None for server in servers):
            return False
        waiting = [port for port in waiting if not _answers(port)]
        time.sleep(POLL_SECONDS)
    return not waiting and stop.signal is None


def print_banner(
    root: Path, postgres: PostgresServer, redis: RedisServer, processes: Sequence[Process]
) -> None:
    def out(line: str) -> None:
        print(line, flush=True)

    shared = root / "shared"
    apis = [p for p in processes if p.name.startswith("api-")]
    web = next(p for p in processes if p.name == "dagster-webserver")
    out(f"PostgreSQL:  {postgres.url}  (data in {postgres.root})")
    out(f"Redis:       {redis.url}")
    out(f"Shared home: {shared}")
    out(f"Dagster UI:  http://127.0.0.1:{web.port}")
    for api in apis:
        out(f"API:         http://127.0.0.1:{api.port}/instruments  ({api.name})")
    out(f"Logs:        {root}/machines/<machine>/logs/")
    out("Load the watchlist from another 'machine' (another shell):")
    out(
        f"  MARKET_POSTGRES_URL={postgres.url} MARKET_SHARED_HOME={shared} "
        f"MARKET_CELERY_BROKER_URL={redis.url} MARKET_DATA_HOME={root}/machines/loader make ingest"
    )


def demo(root: Path, dagster_port: int, api_port: int) -> int:
    stop = StopRequested()
    stop.install()  # before anything starts: from then on a signal stops what has started
    root = root.resolve()
    stoppers: list[Callable[[], None]] = []
    servers: list[Server] = []
    reason: str | None = None
    try:
        postgres = start_postgres(reachable_postgres_folder(root / "postgres"))
        stoppers.append(postgres.stop)
        redis = start_redis(root / "redis")
        stoppers.append(redis.stop)
        (root / "shared").mkdir(parents=True, exist_ok=True)
        shared = {
            POSTGRES_URL_VAR: postgres.url,
            SHARED_HOME_VAR: str(root / "shared"),
            BROKER_VARIABLE: redis.url,
        }
        if stop.signal is None:
            create_lake(root, shared)
        processes = demo_processes(root, dagster_port, api_port)
        if stop.signal is None:
            create_instances([m for m in machines(root) if m.name in DAGSTER_MACHINES], shared)
        for process in processes:
            if stop.signal is None:
                servers.append(spawn(process, shared))
        ports = [p.port for p in processes if p.port is not None]
        if stop.signal is None and wait_until_ready(servers, ports, stop):
            print_banner(root, postgres, redis, processes)
            print("cluster: ready; Ctrl-C stops everything", file=sys.stderr, flush=True)
        ended = wait_for_stop(servers, stop)
        if ended is not None:
            reason = f"{ended.name} exited with code {ended.process.returncode} (see its log)"
    except (ServiceError, ClusterError, LakeError) as exc:
        reason = str(exc)
    finally:
        if reason is not None:
            print(f"cluster: {reason}; stopping the rest", file=sys.stderr)
        elif stop.signal is not None:
            print(f"cluster: {stop.signal.name} received; stopping", file=sys.stderr)
        for name in stop_all(servers, CHILD_STOP_GRACE_SECONDS):
            print(f"cluster: {name} did not stop in time; killed", file=sys.stderr)
        for stopper in reversed(stoppers):
            stopper()
    return 0 if reason is None else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m market_pipeline.cli.cluster", description=__doc__
    )
    commands = parser.add_subparsers(dest="command", required=True)
    worker = commands.add_parser("worker", help="one dagster-celery worker on this machine")
    worker.add_argument("--name", help="the Celery node name (default: dagster-<random>)")
    cluster = commands.add_parser("demo", help="the one-box cluster, until Ctrl-C")
    cluster.add_argument("--home", type=Path, default=Path("storage/cluster"))
    cluster.add_argument("--dagster-port", type=int, default=3000)
    cluster.add_argument("--api-port", type=int, default=8000, help="replica 2 takes the next one")
    args = parser.parse_args(argv)
    try:
        if args.command == "worker":
            return run_worker(os.environ, args.name)
        return demo(args.home, args.dagster_port, args.api_port)
    except ClusterError as exc:
        print(f"{args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
