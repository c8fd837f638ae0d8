"""Benchmarks 1-3: the API on cache hits, on cache misses, and its memory under distinct queries.

The miss benchmark also asks for one day of 1-minute bars (390 intraday bars), interleaved with
the daily misses on the same server.

All servers run at once (each pinned to the server core, idle while another is measured) over
the same DuckDB file, and the runs are interleaved: for each repetition, for 1 and 50
connections, ours, ours with ``adjustment=all``, then the floor, then the baseline. A ratio is
taken within one repetition and connection count, between runs seconds apart.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import psutil

from bench import load, servers
from bench.datagen import (
    LAST_DAY,
    SESSION_MINUTES,
    DataSet,
    ensure_duckdb,
    ensure_intraday,
    intraday_sessions,
    intraday_symbols,
)
from bench.harness import WORK_DIR, Goal, Result, ratios
from bench.servers import Server
from market_api.settings import MAX_LIMIT

CONNECTIONS = (1, 50)
HOT_PATHS = 100
HOT_WINDOW = ("2024-11-01", "2024-11-30")
"""Cache hits ask for one month of daily bars (about 21 bars, 2 KB of JSON) of 100 symbols."""
MISS_SLICE = 60_000
"""Distinct questions set aside per miss run: more than any server answers in one run."""
SEED = 7
ALL = "ours all"
"""Our server asked the same questions with ``&adjustment=all`` (splits and dividends)."""
INTRADAY = "ours intraday"
"""Our server asked for one day of 1-minute bars of a random symbol and session."""


def api_home(data: DataSet) -> Path:
    """A data home whose DuckDB file is the generated full table (linked, never written)."""
    home = WORK_DIR / "api-home"
    home.mkdir(parents=True, exist_ok=True)
    link = home / "market_data.duckdb"
    link.unlink(missing_ok=True)
    link.symlink_to(ensure_duckdb(data))
    return home


def hot_paths(data: DataSet) -> list[str]:
    start, end = HOT_WINDOW
    return [f"/instruments/{s}/ohlcv?start={start}&end={end}" for s in data.names[:HOT_PATHS]]


def distinct_paths(data: DataSet, count: int, seed: int) -> list[str]:
    """``count`` different questions: a random symbol and a random one-year window each."""
    rng = random.Random(seed)
    first = data.first_day
    span = (LAST_DAY - first).days - 365
    seen: set[tuple[str, int]] = set()
    names = data.names
    while len(seen) < count:
        seen.add((rng.choice(names), rng.randrange(span)))
    paths = []
    for symbol, offset in sorted(seen, key=lambda _: rng.random()):
        start = first + dt.timedelta(days=offset)
        end = start + dt.timedelta(days=364)
        paths.append(f"/instruments/{symbol}/ohlcv?start={start}&end={end}")
    return paths


def intraday_paths(data: DataSet, count: int, seed: int) -> list[str]:
    """``count`` different cache keys, each one session of 1-minute bars (390) of a random
    symbol and day. There are only symbols x sessions such days, so ``limit`` (at least a
    day's bars, so it never cuts one) makes each key new: every request is a miss, as for the
    daily questions."""
    rng = random.Random(seed)
    names, days = intraday_symbols(data), intraday_sessions(data)
    seen: set[tuple[str, dt.date, int]] = set()
    while len(seen) < count:
        limit = rng.randrange(SESSION_MINUTES, MAX_LIMIT + 1)
        seen.add((rng.choice(names), rng.choice(days), limit))
    return [
        f"/instruments/{symbol}/ohlcv?interval=1min&start={day}&end={day}&limit={limit}"
        for symbol, day, limit in sorted(seen, key=lambda _: rng.random())
    ]


def really_intraday(ours: Server, path: str) -> None:
    """The intraday question must answer one whole session of 1-minute bars."""
    with urllib.request.urlopen(ours.url + path, timeout=30) as answer:
        bars = json.loads(answer.read())["bars"]
    stamps = [bar["timestamp"][11:16] for bar in bars]
    if len(bars) != SESSION_MINUTES or (stamps[0], stamps[-1]) != ("09:30", "15:59"):
        raise RuntimeError(f"{path}: {len(bars)} bars, not one session of 1-minute bars")


def adjusted(paths: Sequence[str]) -> list[str]:
    return [f"{path}&adjustment=all" for path in paths]


def warm(server: Server, paths: Sequence[str]) -> None:
    for path in paths:
        with urllib.request.urlopen(server.url + path, timeout=30) as answer:
            answer.read()


def same_answer(ours: Server, baseline: Server, path: str) -> None:
    """Both implementations must answer the benchmarked question with the same bars."""
    answers = []
    for server in (ours, baseline):
        with urllib.request.urlopen(server.url + path, timeout=30) as answer:
            answers.append(json.loads(answer.read()))
    a, b = ([(x["timestamp"], x["close"], x["volume"]) for x in d["bars"]] for d in answers)
    if a != b or not a:
        raise RuntimeError(f"ours and the baseline disagree on {path}")


def really_adjusted(ours: Server, path: str) -> None:
    """The adjusted question must do adjusting work: other closes than the raw ones."""
    closes = []
    for query in (path, *adjusted([path])):
        with urllib.request.urlopen(ours.url + query, timeout=30) as answer:
            closes.append([bar["close"] for bar in json.loads(answer.read())["bars"]])
    if closes[0] == closes[1] or len(closes[0]) != len(closes[1]):
        raise RuntimeError(f"{path}: adjustment=all changed nothing; no corporate actions?")


def _add_runs(result: Result, label: str, runs: list[load.Run]) -> None:
    result.add(f"{label} req/s", "req/s", [r.rps for r in runs])
    result.add(f"{label} p50", "ms", [r.p50_ms for r in runs], better="lower")
    result.add(f"{label} p99", "ms", [r.p99_ms for r in runs], better="lower")


def cache_hits(symbols: int, reps: int, seconds: float) -> Result:
    """Benchmark 1: the same questions over and over, answered from each server's cache."""
    load.require_wrk()
    data = DataSet(symbols)
    hot = hot_paths(data)
    trio = [servers.ours(api_home(data)), servers.floor(), servers.baseline(ensure_duckdb(data))]
    ours, floor, baseline = trio
    plan = [(ours.name, ours, hot), (ALL, ours, adjusted(hot)), (floor.name, floor, ["/"]),
            (baseline.name, baseline, hot)]  # fmt: skip
    paths = {label: load.write_paths(f"hit-{label.replace(' ', '-')}", asked)
             for label, _, asked in plan}  # fmt: skip
    runs: dict[tuple[str, int], list[load.Run]] = {}
    with servers.running(*trio):
        same_answer(ours, baseline, hot[0])
        really_adjusted(ours, hot[0])
        for label, server, asked in plan:
            warm(server, asked)
            load.wrk(server.url, paths[label], 50, 1.0)  # JIT-free warm-up: allocator, pools
        for rep in range(reps):
            for conns in CONNECTIONS:
                for label, server, _ in plan:
                    run = load.wrk(server.url, paths[label], conns, seconds)
                    runs.setdefault((label, conns), []).append(run)
            print(f"  rep {rep + 1}/{reps}: " + ", ".join(
                f"{name}@{c} {r[-1].rps:,.0f} req/s" for (name, c), r in runs.items()))  # fmt: skip
    result = Result("api-hit", "API: cache hits (benchmark 1)")
    for conns in CONNECTIONS:
        for name in ("ours", ALL, "floor", "baseline"):
            _add_runs(result, f"{name} @{conns}", runs[(name, conns)])
    for conns in CONNECTIONS:
        ours_rps = [r.rps for r in runs[("ours", conns)]]
        result.add(f"ratio ours/floor req/s @{conns}", "x",
                   ratios(ours_rps, [r.rps for r in runs[("floor", conns)]]))  # fmt: skip
        result.add(f"ratio ours/baseline req/s @{conns}", "x",
                   ratios(ours_rps, [r.rps for r in runs[("baseline", conns)]]))  # fmt: skip
        _add_adjusted_ratios(result, runs, conns)
    result.params = {"symbols": symbols, "seconds_per_run": seconds, "hot_paths": len(hot),
                     "example": hot[0], "connections": list(CONNECTIONS)}  # fmt: skip
    result.goals = [
        Goal("Cache hit p99 <= 3 ms at 1 connection", "ours @1 p99", "<=", 3.0),
        Goal("Cache hit at 50 connections >= 80 % of the floor's req/s",
             "ratio ours/floor req/s @50", ">=", 0.8),
        Goal("Cache hit at 50 connections >= 2x the FastAPI baseline's req/s",
             "ratio ours/baseline req/s @50", ">=", 2.0),
        Goal("Cache hit with adjustment=all as fast as raw: req/s at 50 connections >= 0.9x "
             "raw's", f"ratio {ALL}/ours req/s @50", ">=", 0.9),
        Goal("Cache hit with adjustment=all as fast as raw: p50 at 1 connection <= 1.1x raw's",
             f"ratio {ALL}/ours p50 @1", "<=", 1.1),
    ]  # fmt: skip
    result.notes = [
        "ours: `make api` (granian, one worker, market_api.app:create_app); floor: a Litestar "
        'hello-world returning {"hello": "world"} on the same granian command; baseline: '
        "bench/baselines/fastapi_app.py on uvicorn (uvloop, httptools, access log off), one "
        "worker, same SQL and DuckDB file, functools.lru_cache of pydantic models.",
        f"Hits: {HOT_PATHS} paths (100 symbols, daily bars {HOT_WINDOW[0]}..{HOT_WINDOW[1]}), "
        "requested round-robin after one warm-up pass; the floor gets `/`. "
        f"'{ALL}': the same paths with `&adjustment=all`, on the same server, run right after "
        "'ours'; a hit does no adjusting work, so the two should match within noise "
        "(the 0.9x and 1.1x goals leave room for the run-to-run noise seen on this machine; "
        "the median, not p99, because a hit's p99 at 1 connection swings tenfold between "
        "runs with other processes on the core); "
        "adjusted bodies are larger (unrounded float64 prices print up to 17 digits where the "
        "stored ones have 4 decimals), which is all that differs on the wire.",
        "Load: wrk, 1 thread, pinned to CPU 0; every server pinned to CPU 1 (taskset). "
        "Latency is wrk's (closed loop: a connection sends its next request when the last "
        "answer arrived).",
    ]
    return result


def cache_misses(symbols: int, reps: int, seconds: float) -> Result:
    """Benchmark 2: every question new (random symbol, random one-year window)."""
    load.require_wrk()
    data = DataSet(symbols)
    ensure_intraday(data)
    pair = [servers.ours(api_home(data)), servers.baseline(ensure_duckdb(data))]
    ours, baseline = pair
    plan = [(ours.name, ours), (ALL, ours), (INTRADAY, ours), (baseline.name, baseline)]
    runs: dict[tuple[str, int], list[load.Run]] = {}
    slices = iter(range(1, 1000))

    def questions(label: str, count: int, seed: int) -> list[str]:
        if label == INTRADAY:
            return intraday_paths(data, count, seed)
        batch = distinct_paths(data, count, seed)
        return adjusted(batch) if label == ALL else batch

    with servers.running(*pair):
        first = distinct_paths(data, 1, SEED)[0]
        same_answer(ours, baseline, first)
        really_adjusted(ours, first)
        really_intraday(ours, intraday_paths(data, 1, SEED)[0])
        for label, server in plan:  # first touches of file and thread pools, unmeasured
            warmup = questions(label, 2_000, SEED + 999)
            load.wrk(server.url, load.write_paths("miss-warm", warmup), 50, 1.0)
        for rep in range(reps):
            for conns in CONNECTIONS:
                for label, server in plan:
                    batch = questions(label, MISS_SLICE, SEED + next(slices))
                    run = load.wrk(server.url, load.write_paths("miss", batch), conns, seconds)
                    if run.requests > run.paths:
                        raise RuntimeError(f"{label}: ran out of distinct questions")
                    runs.setdefault((label, conns), []).append(run)
            print(f"  rep {rep + 1}/{reps}: " + ", ".join(
                f"{name}@{c} {r[-1].rps:,.0f} req/s" for (name, c), r in runs.items()))  # fmt: skip
    result = Result("api-miss", "API: cache misses (benchmark 2)")
    for conns in CONNECTIONS:
        for name in ("ours", ALL, INTRADAY, "baseline"):
            _add_runs(result, f"{name} @{conns}", runs[(name, conns)])
    for conns in CONNECTIONS:
        result.add(f"ratio ours/baseline req/s @{conns}", "x", ratios(
            [r.rps for r in runs[("ours", conns)]],
            [r.rps for r in runs[("baseline", conns)]]))  # fmt: skip
        _add_adjusted_ratios(result, runs, conns)
        result.add(f"ratio {INTRADAY}/ours p99 @{conns}", "x", ratios(
            [r.p99_ms for r in runs[(INTRADAY, conns)]],
            [r.p99_ms for r in runs[("ours", conns)]]), better="lower")  # fmt: skip
    rows = data.days().size
    sessions = len(intraday_sessions(data))
    result.params = {"symbols": symbols, "table_rows": symbols * rows,
                     "seconds_per_run": seconds, "question": "1 year of daily bars, random "
                     "symbol and start", "intraday_question": "1 session of 1-minute bars "
                     f"({SESSION_MINUTES}), random symbol and day",
                     "intraday_rows": len(intraday_symbols(data)) * sessions * SESSION_MINUTES,
                     "connections": list(CONNECTIONS)}  # fmt: skip
    result.goals = [
        Goal("Cache miss p99 <= 25 ms at 1 connection", "ours @1 p99", "<=", 25.0),
        Goal("Cache miss at 50 connections >= 1.2x the baseline's req/s",
             "ratio ours/baseline req/s @50", ">=", 1.2),
        Goal("Cache miss with adjustment=all: p99 at 1 connection <= 1.5x the raw miss's",
             f"ratio {ALL}/ours p99 @1", "<=", 1.5),
        Goal("Intraday miss (one day of 1-minute bars) p99 <= 25 ms at 1 connection, as a "
             "daily miss", f"{INTRADAY} @1 p99", "<=", 25.0),
    ]  # fmt: skip
    result.notes = [
        "Every request of a run is a different question (a seeded random symbol and one-year "
        "window, never asked before in this process), so each reaches DuckDB in both servers.",
        f"'{ALL}': our server, other distinct one-year questions with `&adjustment=all`: every "
        "bar divided by its later splits and multiplied by its later dividends' factors, each "
        "dividend looking up the close before its ex-date in the symbol's whole history. The "
        "generated table has 1-3 splits and a quarterly dividend per symbol (bench/datagen.py).",
        f"'{INTRADAY}': our server, one regular session of 1-minute bars "
        f"(`interval=1min&start=D&end=D`, {SESSION_MINUTES} bars, ~30 KB of JSON with "
        "offsets) of a random symbol and day from `ohlcv_intraday` "
        f"({len(intraday_symbols(data))} symbols x {sessions} sessions, bench/datagen.py); "
        "a distinct `limit` of at least 390 makes each request a new cache key, so each is a "
        "miss, measured interleaved with the daily misses on the same server.",
        "Servers, pinning and load generator as in benchmark 1.",
    ]
    return result


def _add_adjusted_ratios(
    result: Result, runs: dict[tuple[str, int], list[load.Run]], conns: int
) -> None:
    """``adjustment=all`` against raw, run by run: req/s and p99."""
    raw, adj = runs[("ours", conns)], runs[(ALL, conns)]
    result.add(f"ratio {ALL}/ours req/s @{conns}", "x",
               ratios([r.rps for r in adj], [r.rps for r in raw]))  # fmt: skip
    for name in ("p50", "p99"):
        values = ratios(
            [getattr(r, f"{name}_ms") for r in adj], [getattr(r, f"{name}_ms") for r in raw]
        )
        result.add(f"ratio {ALL}/ours {name} @{conns}", "x", values, better="lower")


def _rss(server: Server) -> tuple[int, int]:
    """(current RSS, peak RSS) summed over the server's processes, in bytes."""
    rss = peak = 0
    for pid in server.pids():
        rss += psutil.Process(pid).memory_info().rss
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    peak += int(line.split()[1]) * 1024
    return rss, peak


def memory(symbols: int, queries: int) -> Result:
    """Benchmark 3: our server's memory after ``queries`` distinct questions."""
    load.require_wrk()
    data = DataSet(symbols)
    server = servers.ours(api_home(data))
    quarter = queries // 4
    rss: list[float] = []
    seconds: list[float] = []
    with servers.running(server):
        warm(server, ["/health"])
        idle, _ = _rss(server)
        for part in range(4):
            batch = distinct_paths(data, quarter, SEED + 500 + part)
            paths = load.write_paths("memory", batch)
            seconds.append(load.wrk_count(server.url, paths, 50, quarter, 600))
            rss.append(_rss(server)[0])
            print(f"  {(part + 1) * quarter:,} queries: RSS {rss[-1] / 2**20:,.0f} MiB")
        _, peak = _rss(server)
    mib = 2**20
    cache_bound = 256 * mib
    file_mib = ensure_duckdb(data).stat().st_size / mib
    result = Result("api-memory", "API: memory under distinct queries (benchmark 3)")
    result.add("RSS idle (after start)", "MiB", [idle / mib], better="lower")
    for part, value in enumerate(rss):
        result.add(f"RSS after {(part + 1) * quarter:,} queries", "MiB", [value / mib],
                   better="lower")  # fmt: skip
    result.add("peak RSS (VmHWM)", "MiB", [peak / mib], better="lower")
    result.add("peak RSS - idle RSS", "MiB", [(peak - idle) / mib], better="lower")
    result.add("growth over the second half", "%", [100 * (rss[3] / rss[1] - 1)], better="lower")
    result.add("throughput", "req/s", [quarter / s for s in seconds])
    result.params = {"symbols": symbols, "queries": queries, "connections": 50,
                     "cache_entries": 10_000, "cache_bytes_mib": cache_bound // mib,
                     "duckdb_file_mib": round(file_mib)}  # fmt: skip
    result.goals = [
        Goal(f"Memory bounded: peak RSS - idle <= the cache's byte bound (256 MiB) + the "
             f"DuckDB file ({file_mib:.0f} MiB, which DuckDB's buffer pool may hold whole)",
             "peak RSS - idle RSS", "<=", cache_bound / mib + file_mib),
        Goal("LRU bound holds: RSS grows < 5 % from 50k to 100k queries",
             "growth over the second half", "<", 5.0),
    ]  # fmt: skip
    result.notes = [
        "One run of our server with its default cache bounds (10,000 entries, 256 MiB), "
        "answering distinct one-year daily series (~25 KB of JSON each), 50 connections; RSS "
        "of the granian processes (main + worker) read from /proc after each quarter.",
        "Besides the LRU, the process holds DuckDB's buffer pool: blocks of the file it has "
        "read, up to the whole file when questions range over every symbol and year. That is "
        "bounded by the file (DuckDB's memory_limit defaults to 80 % of RAM), not by the LRU.",
    ]
    return result
