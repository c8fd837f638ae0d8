"""Benchmark 6: a 1000-symbol backfill through Dagster vs the same work without it.

Both sides are a fresh process over a fresh data home, fetching compact answers (100 bars) from
the project's Alpha Vantage stub (``tests/stubs/alpha_vantage.py``, on loopback, unthrottled):

* Dagster: ``python -m market_pipeline.cli.ingest`` (what ``make ingest`` runs): registers the
  symbols as dynamic partitions on a new instance, then one ``ingest_job`` run over the whole
  range (``BackfillPolicy.single_run``), with every materialization, check result and log
  event stored by the instance;
* direct: ``python -m bench.direct_backfill``: the same resources and ``BatchRunner``, no Dagster.

The difference, divided by the number of symbols, is the orchestration's overhead per symbol;
the same difference in CPU seconds (the process's user + system time) is reported beside it,
since on a shared box the wall time moves with the other work and the CPU time much less.
Then each side runs once more over the home it left: the daily update (the same symbols, one
answer each, corporate actions not due: three materializations a symbol instead of five).
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from typing import NamedTuple

from bench.datagen import connect, symbol_names
from bench.harness import BENCH_DIR, WORK_DIR, Goal, Result, ratios
from market_core.home import DataHome
from tests.stubs.alpha_vantage import AlphaVantageStub

TIMEOUT = 900.0
"""Per process at 1000 symbols; a larger run gets proportionally more (``_timeout``)."""
STEP_DONE = re.compile(r'Finished execution of step "symbol_pipeline" in ([0-9.]+)(m?s)')
RUN_DONE = re.compile(r"^ingest: run (\S+) for ", re.MULTILINE)
BARS_PER_SYMBOL = 97
"""A compact sample answer holds 100 bars, three of them broken on purpose (rejected)."""


def step_seconds(log: str, home: DataHome) -> float:
    """The step's own duration as Dagster recorded it (the run minus process and run set-up): in
    the run's event log, as the run's console prints INFO and up (``cli/instance.py``)."""
    runs = RUN_DONE.findall(log)
    path = home.dagster_home / "history" / "runs" / f"{runs[-1] if runs else '-'}.db"
    if not path.exists():
        return float("nan")
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        events = conn.execute(
            "SELECT event FROM event_logs WHERE dagster_event_type = 'STEP_SUCCESS'"
        ).fetchall()
    found = [STEP_DONE.search(json.loads(e)["dagster_event"]["message"] or "") for (e,) in events]
    if not found or found[-1] is None:
        return float("nan")
    value, unit = found[-1].groups()
    return float(value) / (1000 if unit == "ms" else 1)


class Spent(NamedTuple):
    """One process's wall and CPU (user + system) seconds."""

    wall: float
    cpu: float


def _children_cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def _run(
    module: str, home: DataHome, stub: AlphaVantageStub, symbols: list[str], fresh: bool = True
) -> tuple[float, str]:
    """One process over ``home``: emptied first, or (``fresh=False``) as the last run left it."""
    spent, log = _measured(module, home, stub, symbols, fresh)
    return spent.wall, log


def _measured(
    module: str, home: DataHome, stub: AlphaVantageStub, symbols: list[str], fresh: bool
) -> tuple[Spent, str]:
    if fresh:
        shutil.rmtree(home.root, ignore_errors=True)
        home.root.mkdir(parents=True)
    env = {
        **os.environ,
        "PYTHONPATH": str(BENCH_DIR.parent),
        "MARKET_DATA_HOME": str(home.root),
        "DAGSTER_HOME": str(home.dagster_home),
        "MARKET_SYMBOLS": ",".join(symbols),
        "ALPHAVANTAGE_API_KEY": "BENCHKEY",
        "ALPHAVANTAGE_BASE_URL": stub.url,
        "ALPHAVANTAGE_OUTPUTSIZE": "compact",
        **{f"ALPHAVANTAGE_REQUESTS_PER_{s}": "0" for s in ("SECOND", "MINUTE", "DAY")},
    }
    log = WORK_DIR / f"{module.rsplit('.', 1)[-1]}-{len(symbols)}.log"
    start, cpu = time.perf_counter(), _children_cpu()
    with log.open("wb") as out:
        done = subprocess.run([sys.executable, "-m", module], env=env, stdout=out,
                              stderr=subprocess.STDOUT, timeout=_timeout(len(symbols)),
                              check=False)  # fmt: skip
    spent = Spent(time.perf_counter() - start, _children_cpu() - cpu)
    if done.returncode != 0:
        raise RuntimeError(f"{module} exited {done.returncode}; see {log}")
    with connect(home.duckdb_path) as conn:
        rows = conn.execute("SELECT count(*) FROM ohlcv_data").fetchall()[0][0]
    if rows != len(symbols) * BARS_PER_SYMBOL:
        raise RuntimeError(f"{module} loaded {rows} rows, expected {len(symbols) * 97}")
    return spent, log.read_text(encoding="utf-8", errors="replace")


def _timeout(count: int) -> float:
    return TIMEOUT * max(1.0, count / 1000)


DAGSTER, DIRECT = "market_pipeline.cli.ingest", "bench.direct_backfill"
DAGSTER_HOME, DIRECT_HOME = DataHome(WORK_DIR / "orch-dagster"), DataHome(WORK_DIR / "orch-direct")


def side_by_side(stub: AlphaVantageStub, count: int) -> tuple[float, float, float]:
    """One repetition: (Dagster wall, its step as recorded, direct wall) for ``count`` symbols."""
    dagster, direct, log = _pair(stub, count, fresh=True)
    return dagster.wall, step_seconds(log, DAGSTER_HOME), direct.wall


def _pair(stub: AlphaVantageStub, count: int, fresh: bool) -> tuple[Spent, Spent, str]:
    """Both sides over ``count`` symbols, over fresh homes or (``fresh=False``) the daily update
    over the homes the last pair left (one new answer per symbol, corporate actions not due):
    (Dagster, direct, Dagster's log)."""
    symbols = symbol_names(count)
    dagster, log = _measured(DAGSTER, DAGSTER_HOME, stub, symbols, fresh)
    direct, _ = _measured(DIRECT, DIRECT_HOME, stub, symbols, fresh)
    return dagster, direct, log


def _per_symbol(minuends: list[float], subtrahends: list[float], count: int) -> list[float]:
    return [(a - b) * 1000 / count for a, b in zip(minuends, subtrahends, strict=True)]


def backfill(count: int, reps: int) -> Result:
    dagster, direct, step, daily, daily_direct = [], [], [], [], []
    cpu: dict[str, list[float]] = {"first": [], "first direct": [], "daily": [], "daily direct": []}
    with AlphaVantageStub() as stub:
        for rep in range(reps):
            first, plain, log = _pair(stub, count, fresh=True)
            dagster.append(first.wall)
            step.append(step_seconds(log, DAGSTER_HOME))
            direct.append(plain.wall)
            cpu["first"].append(first.cpu)
            cpu["first direct"].append(plain.cpu)
            update, plain, _ = _pair(stub, count, fresh=False)
            daily.append(update.wall)
            daily_direct.append(plain.wall)
            cpu["daily"].append(update.cpu)
            cpu["daily direct"].append(plain.cpu)
            print(f"  rep {rep + 1}/{reps}: dagster {dagster[-1]:.1f}s, direct {direct[-1]:.1f}s; "
                  f"daily: dagster {daily[-1]:.1f}s, direct {daily_direct[-1]:.1f}s")  # fmt: skip
    result = Result("orchestration", "Orchestration: 1000-symbol backfill (benchmark 6)")
    result.add("Dagster backfill (make ingest), wall", "s", dagster, better="lower")
    result.add("Dagster step symbol_pipeline (its own log)", "s", step, better="lower")
    result.add("direct BatchRunner, wall", "s", direct, better="lower")
    overhead = _per_symbol(dagster, direct, count)
    result.add("orchestration overhead per symbol", "ms", overhead, better="lower")
    result.add("orchestration CPU per symbol (Dagster CPU - direct CPU)", "ms",
               _per_symbol(cpu["first"], cpu["first direct"], count), better="lower")  # fmt: skip
    result.add("ratio Dagster / direct", "x", ratios(dagster, direct), better="lower")
    result.add("Dagster backfill per symbol", "ms", [d * 1000 / count for d in dagster],
               better="lower")  # fmt: skip
    result.add("daily update (next run, actions not due): make ingest, wall", "s", daily,
               better="lower")  # fmt: skip
    result.add("daily update: direct BatchRunner, wall", "s", daily_direct, better="lower")
    result.add("daily update: orchestration overhead per symbol", "ms",
               _per_symbol(daily, daily_direct, count), better="lower")  # fmt: skip
    result.add("daily update: orchestration CPU per symbol", "ms",
               _per_symbol(cpu["daily"], cpu["daily direct"], count), better="lower")  # fmt: skip
    result.params = {"symbols": count, "outputsize": "compact", "bars_per_answer": 100}
    result.goals = [
        Goal(f"{count}-symbol backfill < 5 minutes", "Dagster backfill (make ingest), wall",
             "<", 300.0),
        Goal("Orchestration overhead <= 20 ms per symbol (issue 20)",
             "orchestration overhead per symbol", "<=", 20.0),
        Goal("Daily update: orchestration overhead <= 20 ms per symbol (issue 20)",
             "daily update: orchestration overhead per symbol", "<=", 20.0),
    ]  # fmt: skip
    result.notes = [
        "Wall time from process start to exit, both sides (interpreter start and imports "
        "included), each over a fresh data home; the stub runs in the benchmark's process.",
        "Dagster side: python -m market_pipeline.cli.ingest with MARKET_SYMBOLS set to the "
        "symbols: a new instance, partitions registered, one ingest_job run over the range.",
    ]
    return result
