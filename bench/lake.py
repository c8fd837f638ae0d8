"""Benchmark 7: the API over the shared lake (multi-machine mode) against the embedded mode.

The same 5.2M bars are copied into a DuckLake whose catalog is a real PostgreSQL started here
(loopback, a temporary folder) and whose files are in a folder standing for the shared home.
Two servers run at once, each `make api`'s command pinned to the server core: the embedded one
over the DuckDB file, and one in lake mode (``MARKET_POSTGRES_URL``, ``MARKET_SHARED_HOME``)
over its own empty data home. Both get the same kinds of questions, interleaved per repetition:
distinct one-year misses, then hot hits. Last, freshness: a process commits a revised bar to
the lake and polls the lake server until its answer shows it; that time is what a replica
takes to serve a commit from another machine (the snapshot poll and a cache miss).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
import urllib.request

from bench import load, servers
from bench.api import CONNECTIONS, SEED, api_home, distinct_paths, hot_paths, warm
from bench.datagen import DataSet, ensure_duckdb
from bench.harness import WORK_DIR, Goal, Result, ratios
from bench.servers import Server
from market_core import lake
from market_core.schema import ACTIONS_TABLE, TABLE
from tools.services import start_postgres

FRESHNESS_COMMITS = 20
FRESHNESS_LIMIT_SECONDS = 10.0
"""A commit not served within this is a failure of the benchmark, not a slow figure."""


def fill_lake(settings: lake.LakeSettings, source: str) -> float:
    """Copy both tables of the generated DuckDB file into the lake; the seconds it took."""
    started = time.perf_counter()
    conn = lake.connect(settings)
    try:
        conn.execute("SET enable_progress_bar = false")
        conn.execute(f"ATTACH '{source}' AS source (READ_ONLY)")
        for table in (TABLE, ACTIONS_TABLE):
            conn.execute(f"INSERT INTO {table} SELECT * FROM source.{table}")
        conn.execute("DETACH source")
    finally:
        conn.close()
    return time.perf_counter() - started


def _close(server: Server, path: str) -> float:
    with urllib.request.urlopen(server.url + path, timeout=10) as answer:
        return float(json.load(answer)["bars"][-1]["close"])


def freshness(settings: lake.LakeSettings, server: Server, symbol: str, day: str) -> list[float]:
    """Seconds from each commit's return to the first answer of the server that shows it."""
    path = f"/instruments/{symbol}/ohlcv?start={day}&end={day}"
    seconds = []
    conn = lake.connect(settings)
    try:
        for _ in range(FRESHNESS_COMMITS):
            before = _close(server, path)
            conn.execute(
                f"UPDATE {TABLE} SET close = close + 0.01 "
                "WHERE symbol = $symbol AND timestamp = CAST($day AS TIMESTAMP)",
                {"symbol": symbol, "day": day},
            )
            committed = time.perf_counter()
            deadline = committed + FRESHNESS_LIMIT_SECONDS
            while _close(server, path) == before:
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"a commit was not served in {FRESHNESS_LIMIT_SECONDS} s")
                time.sleep(0.002)
            seconds.append(time.perf_counter() - committed)
    finally:
        conn.close()
    return seconds


def lake_api(symbols: int, reps: int, seconds: float) -> Result:
    load.require_wrk()
    data = DataSet(symbols)
    root = WORK_DIR / "lake"
    shutil.rmtree(root, ignore_errors=True)
    postgres = start_postgres(root / "postgres", fast=False)
    try:
        url = postgres.create_database("bench_lake")
        shared = root / "shared"
        settings = lake.LakeSettings(
            postgres_url=url, shared_home=str(shared), extension_dir=root / "extensions"
        )
        fill = fill_lake(settings, str(ensure_duckdb(data)))
        embedded = servers.ours(api_home(data))
        lake_home = root / "api-home"
        lake_home.mkdir()
        in_lake = dataclasses.replace(
            servers.ours(lake_home, MARKET_POSTGRES_URL=url, MARKET_SHARED_HOME=str(shared)),
            name="lake",
        )
        return _measure(data, reps, seconds, embedded, in_lake, settings, fill)
    finally:
        postgres.stop()


def _measure(
    data: DataSet,
    reps: int,
    seconds: float,
    embedded: Server,
    in_lake: Server,
    settings: lake.LakeSettings,
    fill: float,
) -> Result:
    pair = (embedded, in_lake)
    hot = hot_paths(data)
    runs: dict[tuple[str, str, int], list[load.Run]] = {}
    slices = iter(range(2000, 3000))
    with servers.running(*pair):
        first = distinct_paths(data, 1, SEED)[0]
        answers = []
        for server in pair:
            with urllib.request.urlopen(server.url + first, timeout=30) as answer:
                answers.append(json.load(answer)["bars"])
        if answers[0] != answers[1]:
            raise RuntimeError("the lake server answers other bars than the embedded one")
        for server in pair:  # first touches of files, pools and the factor steps, unmeasured
            warm(server, hot)
            load.wrk(server.url, load.write_paths("lake-warm", distinct_paths(data, 2000, 9)),
                     50, 1.0)  # fmt: skip
        for rep in range(reps):
            for conns in CONNECTIONS:
                for server in pair:
                    batch = distinct_paths(data, 60_000, SEED + next(slices))
                    run = load.wrk(server.url, load.write_paths("lake-miss", batch), conns,
                                   seconds)  # fmt: skip
                    if run.requests > run.paths:
                        raise RuntimeError(f"{server.name}: ran out of distinct questions")
                    runs.setdefault(("miss", server.name, conns), []).append(run)
                    hits = load.wrk(server.url, load.write_paths("lake-hit", hot), conns, seconds)
                    runs.setdefault(("hit", server.name, conns), []).append(hits)
            print(f"  rep {rep + 1}/{reps}: " + ", ".join(
                f"{kind} {name}@{c} {r[-1].rps:,.0f} req/s p99 {r[-1].p99_ms:.1f} ms"
                for (kind, name, c), r in runs.items()))  # fmt: skip
        fresh = freshness(settings, in_lake, data.names[0], "2024-12-31")
    return _result(data, runs, fresh, fill)


def _result(
    data: DataSet,
    runs: dict[tuple[str, str, int], list[load.Run]],
    fresh: list[float],
    fill: float,
) -> Result:
    result = Result("lake-api", "API over the shared lake (multi-machine mode)")
    for kind in ("miss", "hit"):
        for conns in CONNECTIONS:
            for name in ("ours", "lake"):
                label = f"{kind} {name} @{conns}"
                got = runs[(kind, name, conns)]
                result.add(f"{label} req/s", "req/s", [r.rps for r in got])
                result.add(f"{label} p50", "ms", [r.p50_ms for r in got], better="lower")
                result.add(f"{label} p99", "ms", [r.p99_ms for r in got], better="lower")
            lake_runs, ours_runs = runs[(kind, "lake", conns)], runs[(kind, "ours", conns)]
            result.add(f"ratio {kind} lake/embedded req/s @{conns}", "x",
                       ratios([r.rps for r in lake_runs], [r.rps for r in ours_runs]))  # fmt: skip
            result.add(f"ratio {kind} lake/embedded p99 @{conns}", "x",
                       ratios([r.p99_ms for r in lake_runs], [r.p99_ms for r in ours_runs]),
                       better="lower")  # fmt: skip
    result.add("commit to a replica's first fresh answer", "ms", [s * 1000 for s in fresh],
               better="lower")  # fmt: skip
    result.add("copy of the 5.2M-row table into the lake", "s", [fill], better="lower")
    result.params = {"symbols": data.symbols, "question": "1 year of daily bars (miss); one "
                     "month of 100 symbols (hit)", "commits": len(fresh)}  # fmt: skip
    result.goals = [
        Goal("Lake cache miss p99 <= 25 ms at 1 connection", "miss lake @1 p99", "<=", 25.0),
        Goal("Lake hits unchanged: req/s at 50 connections >= 0.9x embedded's",
             "ratio hit lake/embedded req/s @50", ">=", 0.9),
        Goal("A commit served by a replica within 2 s", "commit to a replica's first fresh "
             "answer", "<=", 2000.0),
    ]  # fmt: skip
    result.notes = [
        "Lake: DuckLake with its catalog in a real PostgreSQL (loopback, started by the "
        "benchmark) and its files in a local folder standing for the shared home; the lake "
        "server is `make api`'s command with MARKET_POSTGRES_URL and MARKET_SHARED_HOME set, "
        "over its own empty data home. Embedded: the same command over the DuckDB file.",
        "Freshness: a separate connection commits an UPDATE of one bar; the time runs from "
        "the commit's return to the first answer showing it (polled every 2 ms), so it is the "
        "server's snapshot poll plus one cache miss.",
        "Servers, pinning and load generator as in benchmark 1.",
    ]
    return result
