"""``make run``'s foreground: the API and ``dagster dev`` side by side, stopped together.

Each server leads a process group of its own, so every signal it gets is one chosen here: a stop
signal becomes SIGINT for ``dagster dev``'s group (Ctrl-C, its clean shutdown) and SIGTERM for
the API's; what outlives the grace is killed. The stop runs whatever happens to this process's
own output (``make run | tee`` loses its reader with the same Ctrl-C). See
docs/design/operations-internals.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType

STOP_GRACE_SECONDS = 7.0
POLL_SECONDS = 0.1
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def say(prefix: str, message: str, stream: str = "stderr") -> None:
    """Write a line, or nothing once its reader is gone: a dead pipe must not end the stop."""
    try:
        print(f"{prefix}: {message}" if prefix else message, file=getattr(sys, stream), flush=True)
    except OSError:  # EPIPE and the like: from now on both streams go to /dev/null
        devnull = os.open(os.devnull, os.O_WRONLY)
        for fd in (1, 2):
            os.dup2(devnull, fd)
        os.close(devnull)


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    stop_signal: signal.Signals

    @property
    def group(self) -> int:
        return self.process.pid  # started with process_group=0: it leads its own group

    def group_alive(self) -> bool:
        """Any process of the group, the leader or what it started, still running."""
        if self.process.poll() is None:
            return True
        try:
            os.killpg(self.group, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.group, sig)


def start(name: str, command: Sequence[str], stop_signal: signal.Signals) -> Server:
    process = subprocess.Popen(list(command), process_group=0)
    return Server(name, process, stop_signal)


class StopRequested:
    """Set by the first stop signal; later ones (make forwards a group SIGTERM) change nothing."""

    def __init__(self) -> None:
        self.signal: signal.Signals | None = None

    def __call__(self, signum: int, _frame: FrameType | None) -> None:
        if self.signal is None:
            self.signal = signal.Signals(signum)

    def install(self) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, self)


def wait_for_stop(servers: Sequence[Server], stop: StopRequested) -> Server | None:
    """Until a stop signal arrives (``None``) or a server exits on its own (that server)."""
    while stop.signal is None:
        for server in servers:
            if server.process.poll() is not None:
                return server
        time.sleep(POLL_SECONDS)
    return None


def stop_all(servers: Sequence[Server], grace: float = STOP_GRACE_SECONDS) -> list[str]:
    """Stop every group, kill what outlives ``grace``; the names of the servers that were killed."""
    for server in servers:
        server.signal_group(server.stop_signal)
    deadline = time.monotonic() + grace
    while any(s.group_alive() for s in servers) and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
    killed = []
    for server in servers:
        if server.group_alive():
            server.signal_group(signal.SIGKILL)
            killed.append(server.name)
        server.process.wait()
    return killed


def serve(api: Sequence[str], dagster: Sequence[str]) -> int:
    stop = StopRequested()
    stop.install()  # before the servers start: a signal from then on stops them
    servers: list[Server] = []
    ended: Server | None = None
    try:
        servers.append(start("the API", api, signal.SIGTERM))
        servers.append(start("dagster dev", dagster, signal.SIGINT))
        ended = wait_for_stop(servers, stop)
        if ended is not None:
            code = ended.process.returncode
            say("serve", f"{ended.name} exited with code {code}; stopping the rest")
        elif stop.signal is not None:
            say("serve", f"{stop.signal.name} received; stopping")
    finally:
        for name in stop_all(servers):
            say("serve", f"{name} did not stop in {STOP_GRACE_SECONDS:.0f} s; killed")
    return 0 if ended is None else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m market_pipeline.cli.serve", description=__doc__
    )
    parser.add_argument("--api", required=True, help="the API's command line")
    parser.add_argument("--dagster", required=True, help="dagster dev's command line")
    args = parser.parse_args(argv)
    # dagster.yaml holds no password: dagster dev's processes get it as PGPASSWORD, from the URL.
    from market_pipeline.cli.instance import InstanceMode, export_password

    export_password(InstanceMode.from_env())
    return serve(shlex.split(args.api), shlex.split(args.dagster))


if __name__ == "__main__":
    raise SystemExit(main())
