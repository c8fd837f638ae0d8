"""``stream``: the push stream with many clients on one granian worker.

The server is ``make api``'s command over a copy of the full generated table, pinned to
``SERVER_CPU``. ``CLIENT_PROCESSES`` separate processes (pinned to ``LOAD_CPU``) each hold a
share of the clients: raw sockets on loopback, one ``GET /instruments/<symbol>/stream`` each
(symbols spread over the data set), read with ``selectors``, recording when each socket first
sees an event of each commit. This process commits daily increments through the pipeline's own
store (``DuckDBFileStore.load``: one new bar for every symbol, so every client gets an event per
commit) and notes when each load returned, i.e. when its commit and data version were published
(in file mode a reader cannot see a commit before the loader lets go of the file). It runs
on the clients' CPU meanwhile, so that the server's core serves the streams alone.

Figures, per repetition: the latency from a load's return to a client's event, over every
(commit, client) pair (p50, p99, max, over 50 commits: one slow commit is 2% of the pairs, so
the p99 shows it), the first client's and the spread to the last; the load's own duration;
the server's RSS with no stream and with every client connected and idle. Every wait is
bounded in time; loopback only.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import json
import os
import re
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import duckdb
import numpy as np
import polars as pl
import psutil

from bench.datagen import LAST_DAY, DataSet, ensure_duckdb
from bench.harness import BENCH_DIR, WORK_DIR, Goal, Result
from bench.servers import LOAD_CPU, Server, ours, pinned, running
from market_pipeline.store.duckdb_file import DuckDBFileStore

CLIENT_PROCESSES = 2
COMMIT_SPACING_SECONDS = 0.3
CONNECT_SECONDS = 60.0
"""Bound on connecting every client and reading its opening event."""
COLLECT_SECONDS = 30.0
"""Bound on a client process's answer after it is told to stop."""
IDLE_SETTLE_SECONDS = 1.0
GOAL_P99_MS = 100.0

_ID = re.compile(rb"id: (\d+)(?:\.\d+)?\n")


@dataclass(frozen=True)
class Sizes:
    clients: int
    commits: int


def stream_home(data: DataSet) -> Path:
    """A data home holding a private copy of the full table: the benchmark commits to it."""
    home = WORK_DIR / "stream-home"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    shutil.copyfile(ensure_duckdb(data), home / "market_data.duckdb")
    return home


def increment(names: list[str], k: int) -> pl.DataFrame:
    """One new bar for every symbol, ``k`` days after the data set's last day."""
    rng = np.random.default_rng(k)
    close = rng.uniform(10, 500, len(names))
    return pl.DataFrame(
        {
            "timestamp": [dt.datetime.combine(LAST_DAY, dt.time()) + dt.timedelta(days=k)]
            * len(names),
            "symbol": names,
            "open": close,
            "high": close * 1.01,
            "low": close * 0.99,
            "close": close,
            "volume": rng.integers(1_000, 1_000_000, len(names)),
        }
    )


def newest_commit(path: Path) -> int:
    with duckdb.connect(str(path), read_only=True) as conn:
        try:
            row = conn.execute("SELECT max(commit_id) FROM bar_commits").fetchone()
        except duckdb.CatalogException:
            return 0
    return 0 if row is None or row[0] is None else int(row[0])


def server_rss(server: Server) -> int:
    total = 0
    for pid in server.pids():
        with contextlib.suppress(psutil.NoSuchProcess):
            total += psutil.Process(pid).memory_info().rss
    return total


@dataclass
class ClientGroup:
    """The client processes of one repetition."""

    processes: list[subprocess.Popen[str]] = field(default_factory=list)

    def start(self, server: Server, paths: list[str]) -> None:
        share = -(-len(paths) // CLIENT_PROCESSES)
        for start in range(0, len(paths), share):
            argv = [
                sys.executable, "-m", "bench.stream", "--client", "--port", str(server.port),
                "--deadline", str(CONNECT_SECONDS + 600), *paths[start : start + share],
            ]  # fmt: skip
            process = subprocess.Popen(
                pinned(LOAD_CPU, argv),
                cwd=BENCH_DIR.parent,
                text=True,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            self.processes.append(process)
        for process in self.processes:
            line = _readline(process.stdout, CONNECT_SECONDS)
            if line.strip() != "READY":
                raise RuntimeError(f"a stream client did not connect: {line!r}")

    def collect(self) -> list[dict[str, list[float]]]:
        """Tell every process to stop; each answers what it saw (bounded)."""
        answers = []
        for process in self.processes:
            assert process.stdin is not None
            with contextlib.suppress(BrokenPipeError):
                process.stdin.write("STOP\n")
                process.stdin.flush()
        for process in self.processes:
            answers.append(json.loads(_readline(process.stdout, COLLECT_SECONDS)))
        return answers

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)
        self.processes.clear()


def _readline(stream: IO[str] | None, seconds: float) -> str:
    assert stream is not None
    selector = selectors.DefaultSelector()
    selector.register(stream, selectors.EVENT_READ)
    try:
        if not selector.select(timeout=seconds):
            raise TimeoutError(f"no answer from a stream client within {seconds:.0f} s")
    finally:
        selector.close()
    return stream.readline()


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def warm_up(server: Server, names: list[str], sizes: Sizes) -> None:
    """Every client connects once and leaves, with no load in between: the server has the
    store open and has read every symbol's newest bar, so the idle RSS measured next holds
    DuckDB's caches already (a load makes the API close the file, which frees them), and the
    difference with the clients connected again is what the streams themselves cost."""
    clients = ClientGroup()
    try:
        clients.start(server, client_paths(names, sizes))
        clients.collect()
    finally:
        clients.stop()
    time.sleep(IDLE_SETTLE_SECONDS)


def client_paths(names: list[str], sizes: Sizes) -> list[str]:
    return [f"/instruments/{names[i % len(names)]}/stream" for i in range(sizes.clients)]


def one_repetition(server: Server, home: Path, names: list[str], sizes: Sizes) -> dict[str, float]:
    warm_up(server, names, sizes)
    idle_rss = server_rss(server)
    clients = ClientGroup()
    try:
        clients.start(server, client_paths(names, sizes))
        time.sleep(IDLE_SETTLE_SECONDS)
        connected_rss = server_rss(server)
        store = DuckDBFileStore(database=str(home / "market_data.duckdb"))
        base = newest_commit(home / "market_data.duckdb")
        committed: dict[int, float] = {}
        load_seconds: list[float] = []
        for k in range(1, sizes.commits + 1):
            frame = increment(names, next(_days))
            started = time.time()
            store.load([frame])
            committed[base + k] = time.time()
            load_seconds.append(committed[base + k] - started)
            time.sleep(COMMIT_SPACING_SECONDS)
        answers = clients.collect()
    finally:
        clients.stop()
    latencies: list[float] = []
    spreads: list[float] = []
    missing = 0
    for commit, at in committed.items():
        arrivals = [t for a in answers for t in a["arrivals"].get(str(commit), [])]
        latencies += [(t - at) * 1000 for t in arrivals]
        if arrivals:
            spreads.append((max(arrivals) - min(arrivals)) * 1000)
        missing += sizes.clients - len(arrivals)
    return {
        "p50": _percentile(latencies, 50),
        "p99": _percentile(latencies, 99),
        "max": max(latencies, default=float("nan")),
        "first": min(latencies, default=float("nan")),
        "spread": statistics.median(spreads) if spreads else float("nan"),
        "missing": float(missing),
        "closed": float(sum(a["closed"] for a in answers)),
        "load_ms": statistics.median(load_seconds) * 1000,
        "idle_mib": idle_rss / 2**20,
        "connected_mib": connected_rss / 2**20,
        "per_client_kib": (connected_rss - idle_rss) / 1024 / sizes.clients,
    }


_days = itertools.count(1)
"""Days after the data set's end, never reused across repetitions: every commit is new."""


@contextlib.contextmanager
def loader_on(cpu: str) -> Iterator[None]:
    """This process (the loader) on the clients' CPU while it commits, as the other benchmarks
    keep the load generator off the server's: the server's core serves the streams alone."""
    if not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) < 2:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {int(cpu)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def push_stream(symbols: int, reps: int, quick: bool) -> Result:
    sizes = Sizes(clients=100, commits=5) if quick else Sizes(clients=1000, commits=50)
    data = DataSet(symbols)
    home = stream_home(data)
    names = data.names
    server = ours(home, MARKET_API_STREAM_MAX_CLIENTS=str(sizes.clients + 50))
    runs = []
    with running(server), loader_on(LOAD_CPU):
        for rep in range(reps):
            run = one_repetition(server, home, names, sizes)
            print(f"  rep {rep + 1}: {json.dumps({k: round(v, 2) for k, v in run.items()})}")
            runs.append(run)
    result = Result(
        name="stream",
        title="Push stream: commit to event, and memory, with many clients on one worker",
        params={
            "clients": sizes.clients,
            "client_processes": CLIENT_PROCESSES,
            "commits_per_rep": sizes.commits,
            "commit_spacing_s": COMMIT_SPACING_SECONDS,
            "bars_per_commit": len(names),
            "table_rows": "full generated table (copy)",
            "server": "make api (granian, 1 worker), pinned to CPU 1; clients on CPU 0",
        },
    )
    result.add("commit to event p50", "ms", [r["p50"] for r in runs], better="lower")
    result.add("commit to event p99", "ms", [r["p99"] for r in runs], better="lower")
    result.add("commit to event max", "ms", [r["max"] for r in runs], better="lower")
    result.add("commit to first client's event", "ms", [r["first"] for r in runs], better="lower")
    result.add(
        "fan-out spread (first to last client, median commit)",
        "ms",
        [r["spread"] for r in runs],
        better="lower",
    )
    result.add("load (1 bar x every symbol)", "ms", [r["load_ms"] for r in runs], better="lower")
    result.add("events missing", "count", [r["missing"] for r in runs], better="lower")
    result.add("streams closed by the server", "count", [r["closed"] for r in runs], better="lower")
    result.add(
        "server RSS, no stream (after a first round)",
        "MiB",
        [r["idle_mib"] for r in runs],
        better="lower",
    )
    result.add(
        f"server RSS, {sizes.clients} idle streams",
        "MiB",
        [r["connected_mib"] for r in runs],
        better="lower",
    )
    result.add("RSS per idle stream", "KiB", [r["per_client_kib"] for r in runs], better="lower")
    result.goals.append(
        Goal(
            f"p99 from a load's commit to the event at a client, {sizes.clients} clients",
            "commit to event p99",
            "<=",
            GOAL_P99_MS,
        )
    )
    result.notes.append(
        "RSS moves by tens of MiB between samples as DuckDB's caches fill and empty (every "
        "load makes the API close the file), so the per-stream figure is only an upper bound "
        "when positive: the streams themselves cost tens of KiB each at most."
    )
    result.notes.append(
        "Latency is measured from the return of DuckDBFileStore.load (the commit checkpointed "
        "and its data version published) to the client's read of the event."
    )
    return result


# ---------------------------------------------------------------------------------------------
# The client process: ``python -m bench.stream --client --port P --deadline S PATH ...``


def client_main(port: int, deadline_seconds: float, paths: list[str]) -> int:
    """Hold one stream per path; say READY once each got its opening event; on ``STOP`` (or
    at the deadline) print, as JSON, when each commit's first event reached each socket."""
    deadline = time.monotonic() + deadline_seconds
    selector = selectors.DefaultSelector()
    tails: dict[socket.socket, bytes] = {}
    last: dict[socket.socket, int] = {}
    opened: set[socket.socket] = set()
    arrivals: dict[int, list[float]] = {}
    closed = 0
    for path in paths:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
        tails[sock], last[sock] = b"", -1
    selector.register(sys.stdin, selectors.EVENT_READ)
    ready = False
    while time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.5):
            if key.fileobj is sys.stdin:
                sys.stdin.readline()
                deadline = 0.0
                continue
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            now = time.time()
            if not data:
                selector.unregister(sock)
                sock.close()
                closed += 1
                continue
            text = tails[sock] + data
            cut = text.rfind(b"\n") + 1
            tails[sock] = text[cut:]
            for match in _ID.finditer(text, 0, cut):
                commit = int(match.group(1))
                if last[sock] < 0:
                    opened.add(sock)
                elif commit > last[sock]:
                    arrivals.setdefault(commit, []).append(now)
                last[sock] = max(last[sock], commit)
        if not ready and len(opened) == len(paths):
            ready = True
            print("READY", flush=True)
    print(json.dumps({"arrivals": arrivals, "closed": closed, "opened": len(opened)}), flush=True)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.stream")
    parser.add_argument("--client", action="store_true")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--deadline", type=float, default=600.0)
    parser.add_argument("paths", nargs="+")
    args = parser.parse_args()
    raise SystemExit(client_main(args.port, args.deadline, args.paths))
