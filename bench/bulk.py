"""``bulk``: ``GET /bars`` on ``make api``'s server: a basket as Arrow, the market on one day,
and the server's memory while it streams millions of bars.

1. A basket (500 symbols x 5 years) as one Arrow page, against the floor (the page's DuckDB
   query, and the server's own batch queries, turned into Arrow IPC bytes in a process of its
   own on the server's core) and against one single-symbol JSON request per symbol, one after
   another. Each repetition asks another window (a week earlier), so the JSON answers are cache
   misses too.
2. The whole market on one day (``/bars?start=D&end=D``), a random day and a distinct ``limit``
   (at least one bar per symbol, below the default) each request, so every request is a miss;
   JSON and Arrow, wrk at one connection.
3. A fresh server's RSS (granian main and worker, sampled) while a client reads 5 million bars
   as Arrow at full speed, twice over, in one-page windows of the whole market.

The client (this process) runs on the load generator's core, the server and the floor on the
server's core (``servers``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import http.client
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import duckdb
import psutil
import pyarrow as pa
import pyarrow.compute as pc

from bench import load, servers
from bench.api import api_home
from bench.datagen import LAST_DAY, DataSet
from bench.harness import BENCH_DIR, Goal, Result, ratios
from bench.servers import Server
from market_api.bars import bulk, by_date, by_symbol
from market_api.bars.pages import page_writer
from market_api.bars.params import DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT
from market_api.bars.schemas import Adjustment, Interval
from market_api.settings import Settings

BASKET = 500
YEARS = 5
STREAM_BARS = 5_000_000
"""At least this many bars are streamed per memory pass (the whole table if it has fewer)."""
HTTP_SECONDS = 120.0
"""Timeout of one HTTP read; every loop below is also bounded by ``LOOP_SECONDS``."""
LOOP_SECONDS = 300.0
SAMPLE_SECONDS = 0.005
MISS_PATHS = 60_000
"""Distinct market-day questions set aside per run: more than a run answers."""
ROUNDS = 3
"""Runs of ours and of each floor per repetition; the median counts."""
SEED = 19
MIB = 2**20
T = TypeVar("T")


def bulk_bars(symbols: int, reps: int, seconds: float) -> Result:
    """The three measurements in one invocation: the basket and the market day on one server,
    the memory on a fresh one."""
    load.require_wrk()
    data = DataSet(symbols)
    server = dataclasses.replace(servers.ours(api_home(data)), name="bulk")
    basket = sorted(random.Random(SEED).sample(data.names, min(BASKET, symbols // 2)))
    result = Result("bulk", "API: bulk reads, GET /bars (issue 19)")
    windows = [window(weeks) for weeks in range(reps + 1)]
    result.params = {"symbols": symbols, "table_rows": symbols * data.days().size,
                     "basket": f"{len(basket)} symbols x {YEARS} years, one Arrow page",
                     "basket_windows": [f"{a}..{b}" for a, b in windows[1:]],
                     "market_day_seconds_per_run": seconds}  # fmt: skip
    with on_cpu(servers.LOAD_CPU), servers.running(server):
        baskets = [basket_rep(server, data, basket, windows[0])]  # warm-up, starts the copy
        ready = copy_ready(server, by_symbol.FOLDER, by_symbol.SUFFIX, by_symbol.BUILDING)
        print(f"  basket: the symbol-ordered copy was ready {ready:.1f} s after the warm-up",
              flush=True)  # fmt: skip
        baskets += [basket_rep(server, data, basket, w) for w in windows[1:]]
        add_basket(result, baskets[1:])
        add_market_day(result, *market_day(server, data, reps, seconds))
    with on_cpu(servers.LOAD_CPU):
        add_memory(result, memory(data))
    result.goals = goals()
    result.notes = notes()
    return result


@contextlib.contextmanager
def on_cpu(cpu: str) -> Iterator[None]:
    """This thread (and the threads it starts) on ``cpu``, as ``servers.pinned`` pins wrk."""
    before = os.sched_getaffinity(0)
    pin = len(before) > 1 and int(cpu) in before
    if pin:
        os.sched_setaffinity(0, {int(cpu)})
    try:
        yield
    finally:
        if pin:
            os.sched_setaffinity(0, before)


def window(weeks_back: int) -> tuple[dt.date, dt.date]:
    end = LAST_DAY - dt.timedelta(weeks=weeks_back)
    return end.replace(year=end.year - YEARS) + dt.timedelta(days=1), end


# 1. The basket


@dataclasses.dataclass(frozen=True)
class Timed:
    seconds: float
    rows: int
    volume: int
    """The sum of every bar's volume: the same answer, not just the same count."""
    size: int


def basket_rep(
    server: Server, data: DataSet, basket: list[str], span: tuple[dt.date, dt.date]
) -> dict[str, Timed]:
    """Ours, the floors and the JSON requests, one after the other, on one window; ours and
    the floors ``ROUNDS`` times each (the median), as the machine's noise moves in seconds."""
    start, end = span
    query = f"symbols={','.join(basket)}&start={start}&end={end}&limit={MAX_PAGE_LIMIT}"
    found = floor_run(data.duckdb_path, basket, span)
    found["ours"] = median_of([arrow_page(server, f"/bars?{query}&format=arrow")
                               for _ in range(ROUNDS)])  # fmt: skip
    found["json"] = json_requests(server, basket, span)
    answers = {(t.rows, t.volume) for t in found.values()}
    if len(answers) != 1 or found["ours"].rows >= MAX_PAGE_LIMIT:
        raise RuntimeError(f"the basket's answers differ (rows, volume): {answers}")
    print(f"  basket {start}..{end}: " + ", ".join(
        f"{name} {t.seconds:.3f} s" for name, t in found.items()) + f" ({found['ours'].rows:,} "
        "bars)", flush=True)  # fmt: skip
    return found


def median_of(runs: list[Timed]) -> Timed:
    return sorted(runs, key=lambda t: t.seconds)[len(runs) // 2]


def connection(server: Server) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", server.port, timeout=HTTP_SECONDS)


def arrow_page(server: Server, path: str) -> Timed:
    """One Arrow answer read as it arrives, batch by batch, as ``pyarrow.ipc.open_stream`` on a
    live URL reads it; timed from the request to the last batch."""
    conn = connection(server)
    try:
        started = time.perf_counter()
        conn.request("GET", path)
        answer = conn.getresponse()
        if answer.status != 200:
            raise RuntimeError(f"{path[:80]}: {answer.status} {answer.read()[:300]!r}")
        reader = pa.ipc.open_stream(answer)
        batches = list(reader)
        seconds = time.perf_counter() - started
    finally:
        conn.close()
    table = pa.Table.from_batches(batches, reader.schema)
    return Timed(seconds, table.num_rows, volume(table), table.nbytes)


def volume(table: pa.Table) -> int:
    return int(pc.sum(table.column("volume")).as_py() or 0)


def json_requests(server: Server, basket: list[str], span: tuple[dt.date, dt.date]) -> Timed:
    """One ``/instruments/{symbol}/ohlcv`` JSON request per symbol, one after the other on one
    keep-alive connection, each body parsed (``json.loads``, as ``requests``' ``.json()``)."""
    start, end = span
    conn = connection(server)
    rows = total = size = 0
    deadline = time.monotonic() + LOOP_SECONDS
    try:
        started = time.perf_counter()
        for symbol in basket:
            conn.request("GET", f"/instruments/{symbol}/ohlcv?start={start}&end={end}")
            answer = conn.getresponse()
            body = answer.read()
            if answer.status != 200 or time.monotonic() > deadline:
                raise RuntimeError(f"{symbol}: {answer.status}, or past {LOOP_SECONDS:.0f} s")
            bars = json.loads(body)["bars"]
            rows += len(bars)
            size += len(body)
            total += sum(bar["volume"] for bar in bars)
        seconds = time.perf_counter() - started
    finally:
        conn.close()
    return Timed(seconds, rows, total, size)


def floor_run(path: Path, basket: list[str], span: tuple[dt.date, dt.date]) -> dict[str, Timed]:
    """``floor_main`` in a process pinned to the server's core: {floor name: its median}."""
    argv = [sys.executable, "-m", "bench.bulk", "--floor", str(path),
            span[0].isoformat(), span[1].isoformat(), ",".join(basket)]  # fmt: skip
    done = subprocess.run(
        servers.pinned(servers.SERVER_CPU, argv), capture_output=True, text=True, check=False,
        timeout=LOOP_SECONDS, cwd=BENCH_DIR.parent,
        env={**os.environ, "PYTHONPATH": str(BENCH_DIR.parent)},
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"the floor failed: {done.stderr[-2000:]}")
    found = json.loads(done.stdout.splitlines()[-1])
    return {name: Timed(**timed) for name, timed in found.items()}


def floor_main(path: str, start: str, end: str, symbols: str) -> int:
    """The floors, each as Arrow IPC stream bytes, on a read-only connection like the server's:
    ``query``, the page's SQL as one query (``bulk.fetch`` of every bar, read as the server
    reads a span: no ``ORDER BY``, the order checked and made in Arrow); ``batches``, the
    server's own read path (``BarBatches`` and its Arrow writer) without HTTP. Each runs once
    to warm up, as the server's earlier requests warmed its own pool, then ``ROUNDS`` times."""
    conn = duckdb.connect(path, read_only=True, config={"enable_external_access": False})
    question = bulk.BulkQuestion.parse(
        symbols.split(","), Interval.DAY, dt.date.fromisoformat(start),
        dt.date.fromisoformat(end), Adjustment.RAW,
    )  # fmt: skip

    def pinned(query: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        return query(conn.cursor())

    def one_query() -> list[pa.Table]:
        return [bulk.fetch(conn.cursor(), question, None, None, MAX_PAGE_LIMIT + 1, None, True)]

    def batches() -> list[pa.Table]:
        page = bulk.Page(MAX_PAGE_LIMIT)
        return list(bulk.BarBatches(pinned, question, page, Settings.batch_rows, None))

    runs: dict[str, list[Timed]] = {"query": [], "batches": []}
    for round_ in range(ROUNDS + 1):
        for name, read in (("query", one_query), ("batches", batches)):
            started = time.perf_counter()
            tables = read()
            size = len(arrow_bytes(tables))
            timed = Timed(time.perf_counter() - started, sum(t.num_rows for t in tables),
                          sum(volume(t) for t in tables), size)  # fmt: skip
            if round_:
                runs[name].append(timed)
    found = {f"floor {name}": dataclasses.asdict(median_of(runs[name])) for name in runs}
    print(json.dumps(found), flush=True)
    return 0


def arrow_bytes(tables: list[pa.Table]) -> bytes:
    """The tables as one Arrow IPC stream, written as the server writes it: a batch at a time."""
    writer = page_writer("arrow", Interval.DAY, Adjustment.RAW, with_symbol=True)
    body = [writer.head(), *(writer.encode(table) for table in tables), writer.tail(None, ())]
    return b"".join(body)


def add_basket(result: Result, reps: list[dict[str, Timed]]) -> None:
    seconds = {name: [rep[name].seconds for rep in reps] for name in reps[0]}
    result.add("basket ours: /bars Arrow, one page", "s", seconds["ours"], better="lower")
    result.add("basket floor: the page's SQL as one query, to Arrow IPC in-process", "s",
               seconds["floor query"], better="lower")  # fmt: skip
    result.add("basket floor: the server's batch queries and Arrow writer in-process", "s",
               seconds["floor batches"], better="lower")  # fmt: skip
    result.add("basket: single-symbol JSON requests, one after another", "s", seconds["json"],
               better="lower")  # fmt: skip
    ours = [rep["ours"] for rep in reps]
    result.add("basket ours", "Mbar/s", [t.rows / t.seconds / 1e6 for t in ours])
    result.add("basket ours", "MB/s of Arrow", [t.size / t.seconds / 1e6 for t in ours])
    fastest = [min(q, b) for q, b in zip(seconds["floor query"], seconds["floor batches"],
                                          strict=True)]  # fmt: skip
    result.add("ratio ours/floor", "x", ratios(seconds["ours"], fastest), better="lower",
               note="the faster floor of each repetition")  # fmt: skip
    result.add("ratio ours/floor query", "x", ratios(seconds["ours"], seconds["floor query"]),
               better="lower")  # fmt: skip
    result.add("ratio ours/floor batches", "x",
               ratios(seconds["ours"], seconds["floor batches"]), better="lower")  # fmt: skip
    result.add("ratio JSON requests/ours", "x", ratios(seconds["json"], seconds["ours"]))


# 2. The whole market on one day


def market_paths(data: DataSet, count: int, seed: int, fmt: str) -> list[str]:
    """``count`` different questions: a random day, and a ``limit`` that holds every symbol's
    bar and stays below the default (so it asks what the default asks) as a new cache key."""
    rng = random.Random(seed)
    days = data.days().astype(str)
    seen: set[tuple[str, int]] = set()
    while len(seen) < count:
        seen.add((str(rng.choice(days)), rng.randrange(data.symbols, DEFAULT_PAGE_LIMIT + 1)))
    suffix = "" if fmt == "json" else f"&format={fmt}"
    return [
        f"/bars?start={day}&end={day}&limit={limit}{suffix}"
        for day, limit in sorted(seen, key=lambda _: rng.random())
    ]


def whole_day(server: Server, data: DataSet) -> None:
    """The question must be the whole market: a bar of every symbol, one page."""
    path = market_paths(data, 1, SEED, "json")[0]
    conn = connection(server)
    try:
        conn.request("GET", path)
        page = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    counts = {len(bars) for bars in page["bars"].values()}
    if len(page["bars"]) < 0.99 * data.symbols or counts != {1} or page["next_page_token"]:
        raise RuntimeError(f"{path}: not one bar of every symbol in one page")


def copy_ready(server: Server, folder: str, suffix: str, building: str) -> float:
    """Seconds until the server's copy in ``folder`` (``by_date``, ``by_symbol``), whose build
    the first suitable question started, is there: the warm-up waits for it."""
    path = Path(server.env["MARKET_DATA_HOME"]) / folder
    started = time.perf_counter()
    while not any(p for p in path.glob(f"*{suffix}") if not p.name.endswith(building)):
        if time.perf_counter() - started > LOOP_SECONDS:
            raise RuntimeError(f"no copy in {path} after {LOOP_SECONDS:.0f} s")
        time.sleep(0.05)
    return time.perf_counter() - started


def market_day(
    server: Server, data: DataSet, reps: int, seconds: float
) -> tuple[dict[str, list[load.Run]], float]:
    whole_day(server, data)
    ready = copy_ready(server, by_date.FOLDER, by_date.SUFFIX, by_date.BUILDING)
    print(f"  market day: the date-ordered copy was ready {ready:.1f} s after the first "
          "question", flush=True)  # fmt: skip
    seeds = iter(range(SEED + 1, SEED + 1000))
    runs: dict[str, list[load.Run]] = {}
    for fmt in ("json", "arrow"):  # warm-up: pools, first touches; unmeasured
        paths = market_paths(data, 2_000, next(seeds), fmt)
        load.wrk(server.url, load.write_paths("bulk-warm", paths), 1, 1.0)
    for rep in range(reps):
        for fmt in ("json", "arrow"):
            paths = market_paths(data, MISS_PATHS, next(seeds), fmt)
            run = load.wrk(server.url, load.write_paths("bulk-day", paths), 1, seconds)
            if run.requests > run.paths:
                raise RuntimeError(f"market day {fmt}: ran out of distinct questions")
            runs.setdefault(fmt, []).append(run)
        print(f"  market day rep {rep + 1}/{reps}: " + ", ".join(
            f"{fmt} p50 {r[-1].p50_ms:.1f} p99 {r[-1].p99_ms:.1f} ms" for fmt, r in runs.items()),
            flush=True)  # fmt: skip
    return runs, ready


def add_market_day(result: Result, runs: dict[str, list[load.Run]], ready: float) -> None:
    result.add("market day: date-ordered copy built (first question to ready)", "s", [ready],
               better="lower")  # fmt: skip
    for fmt, label in (("json", "JSON"), ("arrow", "Arrow")):
        done = runs[fmt]
        result.add(f"market day {label} miss p50 @1", "ms", [r.p50_ms for r in done],
                   better="lower")  # fmt: skip
        result.add(f"market day {label} miss p99 @1", "ms", [r.p99_ms for r in done],
                   better="lower")  # fmt: skip
        result.add(f"market day {label} miss @1", "req/s", [r.rps for r in done])


# 3. Memory while streaming


class RssSampler:
    """The peak of the server's RSS (its processes summed), sampled every ``SAMPLE_SECONDS``
    in a thread of its own until ``stop``."""

    def __init__(self, server: Server) -> None:
        self._processes = [psutil.Process(pid) for pid in server.pids()]
        self.peak = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def rss(self) -> int:
        total = 0
        for process in self._processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                total += process.memory_info().rss
        return total

    def _run(self) -> None:
        while not self._done.wait(SAMPLE_SECONDS):
            self.peak = max(self.peak, self.rss())

    def __enter__(self) -> RssSampler:
        self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join(timeout=5)
        self.peak = max(self.peak, self.rss())

    def high_water(self) -> int:
        """The kernel's own peak (VmHWM) summed over the processes: no sample can miss it,
        but it counts each process's peak whenever it happened (the start included)."""
        total = 0
        for process in self._processes:
            with open(f"/proc/{process.pid}/status", encoding="ascii") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1]) * 1024
        return total


def stream_windows(data: DataSet) -> list[tuple[str, str]]:
    """Windows of whole trading days, each one page of the whole market (at most
    ``MAX_PAGE_LIMIT`` bars), oldest first, until ``STREAM_BARS`` bars or the table's end."""
    days = data.days().astype(str)
    per = MAX_PAGE_LIMIT // data.symbols
    chosen: list[tuple[str, str]] = []
    for at in range(0, len(days), per):
        if len(chosen) * per * data.symbols >= STREAM_BARS:
            break
        chosen.append((str(days[at]), str(days[min(at + per, len(days)) - 1])))
    return chosen


@dataclasses.dataclass(frozen=True)
class Pass:
    peak: int
    after: int
    seconds: float
    rows: int


def stream_pass(server: Server, spans: list[tuple[str, str]]) -> Pass:
    """Every window as one Arrow page, read batch by batch and dropped: a full-speed client."""
    rows = 0
    with RssSampler(server) as sampler:
        started = time.perf_counter()
        for first, last in spans:
            path = f"/bars?start={first}&end={last}&limit={MAX_PAGE_LIMIT}&format=arrow"
            rows += drain(server, path)
        seconds = time.perf_counter() - started
    return Pass(sampler.peak, sampler.rss(), seconds, rows)


def drain(server: Server, path: str) -> int:
    conn = connection(server)
    try:
        conn.request("GET", path)
        answer = conn.getresponse()
        if answer.status != 200:
            raise RuntimeError(f"{path}: {answer.status} {answer.read()[:300]!r}")
        rows = sum(batch.num_rows for batch in pa.ipc.open_stream(answer))
    finally:
        conn.close()
    if not 0 < rows < MAX_PAGE_LIMIT:
        raise RuntimeError(f"{path}: {rows} bars; a window must be one page")
    return rows


@dataclasses.dataclass(frozen=True)
class Memory:
    idle: int
    passes: list[Pass]
    high_water: int
    spans: list[tuple[str, str]]


def memory(data: DataSet) -> Memory:
    """A fresh server: idle after one small Arrow answer, then two passes over the table."""
    server = dataclasses.replace(servers.ours(api_home(data)), name="bulk-memory")
    spans = stream_windows(data)
    with servers.running(server):
        drain(server, f"/bars?symbols={data.names[0]}&start={spans[0][0]}&format=arrow")
        time.sleep(1.0)
        idle = RssSampler(server).rss()
        passes = []
        for number in (1, 2):
            passes.append(stream_pass(server, spans))
            done = passes[-1]
            print(f"  memory pass {number}: {done.rows:,} bars in {done.seconds:.1f} s, peak "
                  f"+{(done.peak - idle) / MIB:.0f} MiB over idle", flush=True)  # fmt: skip
        high_water = RssSampler(server).high_water()
    return Memory(idle, passes, high_water, spans)


def add_memory(result: Result, found: Memory) -> None:
    idle, passes = found.idle, found.passes
    result.add("server RSS idle", "MiB", [idle / MIB], better="lower")
    result.add("peak RSS increase while streaming", "MiB",
               [(max(p.peak for p in passes) - idle) / MIB], better="lower")  # fmt: skip
    for number, done in enumerate(passes, 1):
        result.add(f"pass {number}: peak RSS increase", "MiB", [(done.peak - idle) / MIB],
                   better="lower")  # fmt: skip
        result.add(f"pass {number}: RSS increase after it", "MiB", [(done.after - idle) / MIB],
                   better="lower")  # fmt: skip
    result.add("VmHWM (kernel peak) - idle RSS", "MiB", [(found.high_water - idle) / MIB],
               better="lower")  # fmt: skip
    result.add("streaming", "Mbar/s", [p.rows / p.seconds / 1e6 for p in passes])
    result.params["memory_pages"] = [f"{a}..{b}" for a, b in found.spans]
    result.params["memory_bars_per_pass"] = passes[0].rows


def goals() -> list[Goal]:
    return [
        Goal("Basket (500 symbols x 5 years) as Arrow within 1.5x of the floor (the faster "
             "of the two)",
             "ratio ours/floor", "<=", 1.5),
        Goal("Basket as Arrow >= 20x faster than 500 single-symbol JSON requests",
             "ratio JSON requests/ours", ">=", 20.0),
        Goal("Whole market on one day, cache miss: p99 <= 20 ms at 1 connection (JSON, the "
             "default answer)", "market day JSON miss p99 @1", "<=", 20.0),
        Goal("Peak RSS increase while streaming 5 million bars as Arrow <= 256 MiB",
             "peak RSS increase while streaming", "<=", 256.0),
    ]  # fmt: skip


def notes() -> list[str]:
    return [
        "ours: `make api`'s command (granian, one worker, market_api.app:create_app) on CPU 1 "
        "over the generated DuckDB file; the client (http.client, pyarrow reading the Arrow "
        "stream as it arrives) on CPU 0; loopback only.",
        "Basket: a seeded sample of 500 symbols, 5 years of daily bars, "
        "`/bars?symbols=...&start&end&limit=1000000&format=arrow`: one page. Two "
        "floors, each ending in Arrow IPC stream bytes written by the server's own writer, on "
        "a read-only connection like the server's, in a process on CPU 1: 'query', the page's "
        "SQL as one query (`bulk.fetch` of every bar: `list_contains(symbols, symbol)` and the "
        "window, read without ORDER BY as the server reads a span, then checked to be in "
        "(symbol, timestamp) order and sorted in Arrow if not, `market_api/bars/key_order.py`); "
        "'batches', the server's read path itself "
        "(`BarBatches`: spans of whole symbols of at most 131,072 bars, "
        "`MARKET_API_BATCH_ROWS`, planned from the bars "
        "per symbol and month of the data version, one query per span; here without the "
        "month counts, so with the exact count query a first page at a new version falls "
        "back to) without HTTP. The goal is "
        "judged against the faster of the two in each repetition. JSON: the 500 "
        "`/instruments/{symbol}/ohlcv` requests on one keep-alive connection, each parsed with "
        "`json.loads`. Ours and each floor run 3 times a repetition (the median counts), the "
        "JSON requests once; each repetition asks a window a week earlier than the last, so "
        "every JSON answer is a miss; all answers must hold the same bars (count, volume sum). "
        "The warm-up repetition starts the server's symbol-ordered copy of the data version "
        "(`market_api/bars/by_symbol.py`), which the measured ones wait for and read: the "
        "floors read the DuckDB file.",
        "Market day: wrk, one connection, a seeded random day and a distinct `limit` between "
        "the symbol count and the default 10,000 per request (same work as the default "
        "question, a new cache key each time). The first such question starts the build of "
        "the server's date-ordered copy of the data version (`market_api/bars/by_date.py`, "
        "in a thread, on the server's core); the warm-up waits until its file is there "
        "(the 'copy built' figure) before anything is measured.",
        "Memory: a fresh server; idle RSS after one small Arrow answer; then 5 million bars "
        "as windows of whole trading days of the whole market, each one page (at most "
        "1,000,000 bars), read at full speed "
        "and dropped, twice over; RSS of granian's main and worker process summed, sampled "
        "every 5 ms (psutil). 'VmHWM' is the kernel's peak per process, summed.",
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.bulk")
    parser.add_argument("--floor", nargs=4, metavar=("DUCKDB", "START", "END", "SYMBOLS"),
                        required=True)  # fmt: skip
    raise SystemExit(floor_main(*parser.parse_args().floor))
