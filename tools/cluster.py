"""``make cluster``: the several-machines mode on one box, for trying it and for its tests.

PostgreSQL, Redis, two workers, the Dagster webserver and daemon and two API replicas run as
separate processes; each "machine" has a data home of its own and shares only the three variables
of the mode. Stopping reuses ``serve``'s groups and grace, PostgreSQL and Redis last, so
everything is gone within 10 s. See docs/design/operations-internals.md.
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

from market_core.home import SHARED_HOME_VAR
from market_core.lake import POSTGRES_URL_VAR, LakeError, LakeSettings, connect
from market_pipeline.cli.serve import (
    POLL_SECONDS,
    Server,
    StopRequested,
    say,
    stop_all,
    wait_for_stop,
)
from market_pipeline.cli.worker import VENV_BIN, with_venv_path, worker_command
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
# The children get this long to stop, PostgreSQL and Redis a little more: within 10 s in all.
CHILD_STOP_GRACE_SECONDS = 5.0
API_ENV = (("MARKET_API_AUTH", "required"),)
"""The replicas want a key, as any replica reached from other machines must (loopback alone
would leave auth off): keys live in the catalog's PostgreSQL, so one key opens both."""
READY_TIMEOUT_SECONDS = 180.0
INSTANCE_TIMEOUT_SECONDS = 180.0
REPO = Path(__file__).resolve().parents[1]


class Group(Server):
    """A server whose exited members count as gone before they are reaped.

    A member whose parent ended first (a Celery pool process, a code server) stays a zombie
    until init reaps it, and in a container init may never do so: ``killpg(group, 0)`` cannot
    tell it from a live process, so the stop would wait out its grace and report a kill."""

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


class CeleryWorker(Group):
    """Stopped through its main process: Celery's pool processes die at once on a SIGTERM of
    their own, so one sent to the whole group would end the steps they run instead of letting
    them finish (Celery's warm shutdown). What outlives the grace is killed as a group."""

    def signal_group(self, sig: signal.Signals) -> None:
        if sig == signal.SIGKILL:
            super().signal_group(sig)
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, sig)


class ClusterError(RuntimeError):
    """The demo cluster cannot start as asked."""


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
    supervised_as: type[Group] = Group
    env: tuple[tuple[str, str], ...] = ()
    """Variables of this process alone, on top of its machine's."""


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
        command = worker_command(name)  # what `make worker` runs: it becomes Celery's worker
        processes.append(
            Process(name, by_name[name], command, signal.SIGTERM, supervised_as=CeleryWorker)
        )
    for name, port in (("api-1", api_port), ("api-2", api_port + 1)):
        command = [*granian, "--port", str(port), *api]
        processes.append(Process(name, by_name[name], command, signal.SIGTERM, port, env=API_ENV))
    return processes


def spawn(process: Process, shared: Mapping[str, str]) -> Server:
    """Started in a group of its own (as ``serve.start`` does), with its machine's environment
    and its output in ``<data home>/logs/<name>.log``."""
    env = {**process.machine.env(shared, os.environ), **dict(process.env)}
    with process.machine.log(process.name).open("ab") as log:
        popen = subprocess.Popen(
            process.command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, process_group=0,
        )  # fmt: skip
    return process.supervised_as(process.name, popen, process.stop_signal)


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
        say("", line, "stdout")

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
    keyed = f"MARKET_POSTGRES_URL={postgres.url} MARKET_SHARED_HOME={shared}"
    out("The API replicas want a key (/health and /schema do not); make one, shown once:")
    out(f"  {keyed} make api-key NAME=demo")
    out(f"  curl -H 'Authorization: Bearer <key>' http://127.0.0.1:{apis[0].port}/instruments")
    out(f"  ({keyed} make api-keys lists them, make api-key-revoke NAME=demo revokes)")
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
            say("cluster", "ready; Ctrl-C stops everything")
        ended = wait_for_stop(servers, stop)
        if ended is not None:
            reason = f"{ended.name} exited with code {ended.process.returncode} (see its log)"
    except (ServiceError, ClusterError, LakeError) as exc:
        reason = str(exc)
    finally:
        if reason is not None:
            say("cluster", f"{reason}; stopping the rest")
        elif stop.signal is not None:
            say("cluster", f"{stop.signal.name} received; stopping")
        for name in stop_all(servers, CHILD_STOP_GRACE_SECONDS):
            say("cluster", f"{name} did not stop in time; killed")
        for stopper in reversed(stoppers):
            stopper()
    return 0 if reason is None else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.cluster", description=__doc__)
    parser.add_argument("--home", type=Path, default=Path("storage/cluster"))
    parser.add_argument("--dagster-port", type=int, default=3000)
    parser.add_argument("--api-port", type=int, default=8000, help="replica 2 takes the next one")
    args = parser.parse_args(argv)
    return demo(args.home, args.dagster_port, args.api_port)


if __name__ == "__main__":
    raise SystemExit(main())
