"""Benchmark 7: the API over the shared lake (multi-machine mode) against the embedded mode.

The same 5.2M bars are copied into a DuckLake whose catalog is a real PostgreSQL started here
(loopback, a temporary folder) and whose files are in a folder standing for the shared home.
Two servers run at once, each `make api`'s command pinned to the server core: the embedded one
over the DuckDB file, and one in lake mode (``MARKET_POSTGRES_URL``, ``MARKET_SHARED_HOME``)
over its own empty data home, which builds its local copy of the lake at start (its log says
how long; the benchmark waits for it). Both get the same kinds of questions, interleaved per
repetition: distinct one-year misses of one symbol and hot hits at 1 and 50 connections, then,
when the server has ``/bars``, distinct misses of many symbols (a year of 20) and of the whole
market on one day, at 1 connection. Then freshness: a process commits a revised bar to the lake
and polls the lake server until its answer shows it. Last, with the servers stopped, where a
miss's time goes: the same one-year questions asked in-process of the lake reader with its copy
and without (every question read from the lake), timed, with the catalog transactions each
costs (PostgreSQL's own counters).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import random
import re
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import duckdb
import psutil
import psycopg

from bench import load, servers
from bench.api import CONNECTIONS, SEED, api_home, distinct_paths, hot_paths, warm
from bench.datagen import LAST_DAY, DataSet, ensure_duckdb
from bench.harness import WORK_DIR, Goal, Result, ratios
from bench.servers import Server
from market_api.bars import queries
from market_api.bars.schemas import Interval
from market_api.readers.lake import LakeReader
from market_core import lake
from market_core.schema import ACTIONS_TABLE, TABLE
from tools.services import start_postgres

FRESHNESS_COMMITS = 20
FRESHNESS_LIMIT_SECONDS = 10.0
"""A commit not served within this is a failure of the benchmark, not a slow figure."""
COPY_LIMIT_SECONDS = 600.0
"""A replica whose copy is not built within this fails the benchmark."""
BULK_SYMBOLS = 20
"""A many-symbol question: a year of this many symbols (about 5,000 bars, one page)."""
BULK_KINDS = ("bars", "day")
"""``/bars`` of ``BULK_SYMBOLS`` symbols over a year, and of every symbol on one day."""
BREAKDOWN_QUESTIONS = 300
STATS_SETTLE_SECONDS = 1.0
"""PostgreSQL counts a backend's transactions when it ends: the reader is shut down (its
catalog connections close) and the counters read this long after."""
COPY_BUILT = re.compile(r"lake copy built at snapshot \d+ in ([\d.]+) s \((\d+) daily bars\)")


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


def bulk_paths(data: DataSet, count: int, seed: int) -> list[str]:
    """``count`` different questions: a random year of ``BULK_SYMBOLS`` random symbols."""
    rng = random.Random(seed)
    span = (LAST_DAY - data.first_day).days - 365
    paths = []
    for _ in range(count):
        symbols = ",".join(sorted(rng.sample(data.names, BULK_SYMBOLS)))
        start = data.first_day + dt.timedelta(days=rng.randrange(span))
        end = start + dt.timedelta(days=364)
        paths.append(f"/bars?symbols={symbols}&start={start}&end={end}")
    return paths


def market_days(data: DataSet, reps: int) -> list[list[str]]:
    """The whole market on one day, every trading day once, shuffled and dealt into ``reps``
    disjoint slices (a day asked twice of one server would be a hit)."""
    days = [f"/bars?start={day}&end={day}" for day in data.days().astype(str)]
    random.Random(SEED).shuffle(days)
    return [days[i::reps] for i in range(reps)]


def copy_ready(server: Server) -> tuple[float, int]:
    """Wait for the lake server's copy (its log line); the build's seconds and bars."""
    log = WORK_DIR / f"server-{server.name}.log"
    deadline = time.monotonic() + COPY_LIMIT_SECONDS
    while (found := COPY_BUILT.search(log.read_text(errors="replace"))) is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the lake copy was not built in {COPY_LIMIT_SECONDS:.0f} s")
        time.sleep(0.2)
    return float(found.group(1)), int(found.group(2))


def _answer(server: Server, path: str) -> object:
    with urllib.request.urlopen(server.url + path, timeout=60) as answer:
        return json.load(answer)


def same_answers(pair: tuple[Server, Server], paths: list[str]) -> None:
    for path in paths:
        answers = [_answer(server, path) for server in pair]
        if answers[0] != answers[1]:
            raise RuntimeError(f"the lake server answers {path} otherwise than the embedded one")


def has_bulk(server: Server, path: str) -> bool:
    """Whether the server answers ``/bars`` (built by issue 19's item 1)."""
    try:
        _answer(server, path)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return False
        raise
    return True


def rss_mib(server: Server) -> float:
    return sum(psutil.Process(pid).memory_info().rss for pid in server.pids()) / 2**20


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
        measured = _measure(data, reps, seconds, (embedded, in_lake), settings)
        breakdown = where_the_time_goes(data, settings, url, root / "breakdown-copy")
        return _result(data, measured, breakdown, fill)
    finally:
        postgres.stop()


@dataclasses.dataclass
class Measured:
    runs: dict[tuple[str, str, int], list[load.Run]]
    fresh: list[float]
    copy_seconds: float
    copy_bars: int
    rss: dict[str, float]
    bulk: bool


def _measure(
    data: DataSet,
    reps: int,
    seconds: float,
    pair: tuple[Server, Server],
    settings: lake.LakeSettings,
) -> Measured:
    embedded, in_lake = pair
    hot = hot_paths(data)
    runs: dict[tuple[str, str, int], list[load.Run]] = {}
    slices = iter(range(2000, 3000))
    days = market_days(data, reps)

    def run(kind: str, server: Server, conns: int, paths: list[str]) -> None:
        got = load.wrk(server.url, load.write_paths(f"lake-{kind}", paths), conns, seconds)
        if kind != "hit" and got.requests > got.paths:
            raise RuntimeError(f"{server.name}: ran out of distinct {kind} questions")
        runs.setdefault((kind, server.name, conns), []).append(got)

    with servers.running(*pair):
        copy_seconds, copy_bars = copy_ready(in_lake)
        bulk = has_bulk(embedded, bulk_paths(data, 1, SEED)[0])
        checks = [distinct_paths(data, 1, SEED)[0]]
        if bulk:
            checks += [bulk_paths(data, 1, SEED + 1)[0], days[0][0]]
        same_answers(pair, checks)
        for server in pair:  # first touches of files, pools and the factor steps, unmeasured
            warm(server, hot)
            load.wrk(server.url, load.write_paths("lake-warm", distinct_paths(data, 2000, 9)),
                     50, 1.0)  # fmt: skip
        for rep in range(reps):
            for conns in CONNECTIONS:
                for server in pair:
                    run("miss", server, conns, distinct_paths(data, 60_000, SEED + next(slices)))
                    run("hit", server, conns, hot)
            if bulk:
                many = bulk_paths(data, 20_000, SEED + next(slices))
                for server in pair:
                    run("bars", server, 1, many)
                    run("day", server, 1, days[rep][1:])
            print(f"  rep {rep + 1}/{reps}: " + ", ".join(
                f"{kind} {name}@{c} {r[-1].rps:,.0f} req/s p99 {r[-1].p99_ms:.1f} ms"
                for (kind, name, c), r in runs.items()))  # fmt: skip
        fresh = freshness(settings, in_lake, data.names[0], "2024-12-31")
        rss = {server.name: rss_mib(server) for server in pair}
    return Measured(runs, fresh, copy_seconds, copy_bars, rss, bulk)


@dataclasses.dataclass
class Breakdown:
    """One-year questions asked in-process of the lake reader, through the lake and the copy."""

    lake_ms: list[float]
    copy_ms: list[float]
    lake_transactions: float
    copy_transactions: float
    build_seconds: float


def catalog_transactions(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database "
            "WHERE datname = current_database()"
        ).fetchone()
    return 0 if row is None else int(row[0])


def where_the_time_goes(
    data: DataSet, settings: lake.LakeSettings, url: str, folder: Path
) -> Breakdown:
    """Each question's time through the lake and through the copy, and the catalog
    transactions it costs: those of a reader that asks, less those of one that only starts."""
    rng = random.Random(SEED)
    span = (LAST_DAY - data.first_day).days - 365
    asked = []
    for _ in range(BREAKDOWN_QUESTIONS):
        start = data.first_day + dt.timedelta(days=rng.randrange(span))
        asked.append((rng.choice(data.names), start, start + dt.timedelta(days=364)))
    started = time.perf_counter()
    _session(settings, folder, True, [])  # builds the copy
    build = time.perf_counter() - started
    timings: dict[bool, list[float]] = {}
    per_question: dict[bool, float] = {}
    for copied in (False, True):
        before = catalog_transactions(url)
        _session(settings, folder, copied, [])
        idle = catalog_transactions(url) - before
        before = catalog_transactions(url)
        timings[copied] = _session(settings, folder, copied, asked)
        asking = catalog_transactions(url) - before
        per_question[copied] = (asking - idle) / len(asked)
    return Breakdown(timings[False], timings[True], per_question[False], per_question[True], build)


def _session(
    settings: lake.LakeSettings,
    folder: Path,
    copied: bool,
    asked: list[tuple[str, dt.date, dt.date]],
) -> list[float]:
    """A lake reader (with its copy or without) that starts, asks ``asked`` one after another
    at its data version, and shuts down; each question's milliseconds."""
    reader = LakeReader(settings, copy_folder=folder, keep_copy=copied)
    try:
        deadline = time.monotonic() + COPY_LIMIT_SECONDS
        while not _ready(reader, copied):
            if time.monotonic() > deadline:
                raise RuntimeError("the in-process lake copy was not built in time")
            time.sleep(0.05)
        version = reader.data_version()
        millis = []
        for symbol, start, end in asked:
            began = time.perf_counter()
            reader.run_at(version, _bars(symbol, start, end))
            millis.append((time.perf_counter() - began) * 1000)
    finally:
        reader.shutdown()
    time.sleep(STATS_SETTLE_SECONDS)
    return millis


def _ready(reader: LakeReader, copied: bool) -> bool:
    reader.poll()
    version = reader.data_version()
    if version is None:
        return False
    return not copied or reader.run_at(version, _database) == "copy"


def _database(cur: duckdb.DuckDBPyConnection) -> str:
    row = cur.execute("SELECT current_database()").fetchone()
    return "" if row is None else str(row[0])


def _bars(
    symbol: str, start: dt.date, end: dt.date
) -> Callable[[duckdb.DuckDBPyConnection], object]:
    return lambda cur: queries.bars(cur, symbol, Interval.DAY, start, end, None)


def _add_kind(result: Result, runs: dict[tuple[str, str, int], list[load.Run]], kind: str,
              conns: int) -> None:  # fmt: skip
    for name in ("ours", "lake"):
        label = f"{kind} {name} @{conns}"
        got = runs[(kind, name, conns)]
        result.add(f"{label} req/s", "req/s", [r.rps for r in got])
        result.add(f"{label} p50", "ms", [r.p50_ms for r in got], better="lower")
        result.add(f"{label} p99", "ms", [r.p99_ms for r in got], better="lower")
    lake_runs, ours_runs = runs[(kind, "lake", conns)], runs[(kind, "ours", conns)]
    result.add(f"ratio {kind} lake/embedded req/s @{conns}", "x",
               ratios([r.rps for r in lake_runs], [r.rps for r in ours_runs]))  # fmt: skip
    for pct in ("p50", "p99"):
        result.add(f"ratio {kind} lake/embedded {pct} @{conns}", "x",
                   ratios([getattr(r, f"{pct}_ms") for r in lake_runs],
                          [getattr(r, f"{pct}_ms") for r in ours_runs]),
                   better="lower")  # fmt: skip


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _result(data: DataSet, measured: Measured, breakdown: Breakdown, fill: float) -> Result:
    result = Result("lake-api", "API over the shared lake (multi-machine mode)")
    runs = measured.runs
    for kind in ("miss", "hit"):
        for conns in CONNECTIONS:
            _add_kind(result, runs, kind, conns)
    if measured.bulk:
        for kind in BULK_KINDS:
            _add_kind(result, runs, kind, 1)
    result.add("commit to a replica's first fresh answer", "ms",
               [s * 1000 for s in measured.fresh], better="lower")  # fmt: skip
    result.add("copy of the 5.2M-row table into the lake", "s", [fill], better="lower")
    result.add("replica's local copy built at start", "s", [measured.copy_seconds],
               better="lower")  # fmt: skip
    for name, mib in measured.rss.items():
        result.add(f"RSS {name} server after the runs", "MiB", [mib], better="lower")
    for label, millis in (("through the lake", breakdown.lake_ms),
                          ("from the copy", breakdown.copy_ms)):  # fmt: skip
        result.add(f"in-process question {label} p50", "ms", [_percentile(millis, 0.5)],
                   better="lower")  # fmt: skip
        result.add(f"in-process question {label} p99", "ms", [_percentile(millis, 0.99)],
                   better="lower")  # fmt: skip
    result.add("catalog transactions per question through the lake", "n",
               [breakdown.lake_transactions], better="lower")  # fmt: skip
    result.add("catalog transactions per question from the copy", "n",
               [breakdown.copy_transactions], better="lower")  # fmt: skip
    result.add("in-process copy build (5.2M bars)", "s", [breakdown.build_seconds],
               better="lower")  # fmt: skip
    result.params = {"symbols": data.symbols, "question": "1 year of daily bars of one symbol "
                     "(miss); one month of 100 symbols (hit); with /bars: 1 year of "
                     f"{BULK_SYMBOLS} symbols (bars), every symbol on one day (day)",
                     "commits": len(measured.fresh), "copy_bars": measured.copy_bars,
                     "in_process_questions": BREAKDOWN_QUESTIONS}  # fmt: skip
    result.goals = [
        Goal("Lake misses within 1.5x of embedded: p99 at 1 connection, one symbol",
             "ratio miss lake/embedded p99 @1", "<=", 1.5),
        Goal("Lake misses within 1.5x of embedded: req/s at 50 connections, one symbol",
             "ratio miss lake/embedded req/s @50", ">=", 1 / 1.5),
        Goal("Lake cache miss p99 <= 25 ms at 1 connection", "miss lake @1 p99", "<=", 25.0),
        Goal("Lake hits unchanged: req/s at 50 connections >= 0.9x embedded's",
             "ratio hit lake/embedded req/s @50", ">=", 0.9),
        Goal("A commit served by a replica within 2 s", "commit to a replica's first fresh "
             "answer", "<=", 2000.0),
    ]  # fmt: skip
    if measured.bulk:
        result.goals[2:2] = [
            Goal(f"Lake misses within 1.5x of embedded: p99 at 1 connection, /bars of "
                 f"{BULK_SYMBOLS} symbols", "ratio bars lake/embedded p99 @1", "<=", 1.5),
            Goal("Lake misses within 1.5x of embedded: p99 at 1 connection, /bars of the "
                 "market on one day", "ratio day lake/embedded p99 @1", "<=", 1.5),
        ]  # fmt: skip
    result.notes = [
        "Lake: DuckLake with its catalog in a real PostgreSQL (loopback, started by the "
        "benchmark) and its files in a local folder standing for the shared home; the lake "
        "server is `make api`'s command with MARKET_POSTGRES_URL and MARKET_SHARED_HOME set, "
        "over its own empty data home, where it builds its local copy of the lake at start "
        "(answering from the lake meanwhile; the runs start once the copy is built). "
        "Embedded: the same command over the DuckDB file.",
        "Freshness: a separate connection commits an UPDATE of one bar; the time runs from "
        "the commit's return to the first answer showing it (polled every 2 ms): the "
        "server's snapshot poll, the copy's catch-up, and one cache miss.",
        "In-process: the same one-year questions, one after another, of a lake reader that "
        "reads the lake (keep_copy=False, what every miss did before the copy) and of one "
        "that answers from its copy; catalog transactions from pg_stat_database, less a "
        "reader's that starts and stops without asking.",
        "Servers, pinning and load generator as in benchmark 1.",
    ]
    return result
