"""The load generator: wrk on its own core, one thread, a Lua script that walks a list of paths.

wrk (C, event-driven) drives 50 keep-alive connections from one thread at far more requests per
second than any of the servers answer, so the server is what is measured. Every run is bounded
by ``--duration``, and by a response count where one is given.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import BENCH_DIR, WORK_DIR
from bench.servers import LOAD_CPU, pinned

SCRIPT = BENCH_DIR / "lua" / "paths.lua"
INSTALL_HINT = "wrk is needed for the API benchmarks: apt-get install wrk (Debian/Ubuntu)"


class LoadError(RuntimeError):
    """wrk is missing, failed, or some requests got no good answer."""


@dataclass(frozen=True)
class Run:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: dict[str, int]
    paths: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise LoadError(INSTALL_HINT)
    return path


def write_paths(name: str, paths: list[str]) -> Path:
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    target = WORK_DIR / f"paths-{name}.txt"
    target.write_text("\n".join(paths) + "\n", encoding="ascii")
    return target


def _wrk(paths: Path, argv: list[str], timeout: float, max_responses: int) -> str:
    env = {**os.environ, "BENCH_PATHS": str(paths), "BENCH_MAX": str(max_responses)}
    done = subprocess.run(
        pinned(LOAD_CPU, argv), env=env, capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise LoadError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    return done.stdout


def _json(stdout: str, tag: str) -> dict[str, Any]:
    line = next((x for x in stdout.splitlines() if x.startswith(tag + " ")), None)
    if line is None:
        raise LoadError(f"wrk printed no {tag} line: {stdout[-2000:]}")
    return dict(json.loads(line.removeprefix(tag + " ")))


def wrk(
    url: str, paths: Path, connections: int, seconds: float, headers: Sequence[str] = ()
) -> Run:
    """A run of fixed duration: throughput and latency percentiles; ``headers`` ("Name: value")
    go with every request."""
    argv = [require_wrk(), "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s",
            *[arg for header in headers for arg in ("-H", header)],
            "-s", str(SCRIPT), url]  # fmt: skip
    data = _json(_wrk(paths, argv, seconds + 60, 0), "BENCH_JSON")
    run = Run(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["latency_us"]["p50"] / 1000,
        p99_ms=data["latency_us"]["p99"] / 1000,
        errors={k: v for k, v in data["errors"].items() if v},
        paths=data["paths"],
    )
    if run.errors:
        raise LoadError(f"{url}: {run.errors} of {run.requests} requests failed")
    return run


def wrk_count(url: str, paths: Path, connections: int, responses: int, limit: float) -> float:
    """Send until ``responses`` answers arrived (at most ``limit`` seconds); return the wall
    seconds it took. Raises if any answer was an error or the limit was reached first."""
    argv = [require_wrk(), "-t1", f"-c{connections}", f"-d{limit:g}s", "--timeout", "10s",
            "-s", str(SCRIPT), url]  # fmt: skip
    start = time.perf_counter()
    stdout = _wrk(paths, argv, limit + 60, responses)
    elapsed = time.perf_counter() - start
    if "BENCH_STOP " not in stdout:
        raise LoadError(f"{url}: fewer than {responses} answers within {limit:g} s")
    data = _json(stdout, "BENCH_STOP")
    if data["bad"]:
        raise LoadError(f"{url}: {data['bad']} of {data['responses']} answers were errors")
    return elapsed
