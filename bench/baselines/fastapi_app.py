"""The original design, as the baseline: FastAPI + uvicorn, pydantic models, an in-process cache.

Same routes and parameters as ``market_api``, the same SQL (``market_api.bars.queries``) on the same
DuckDB file, through one long-lived read-only connection with a cursor per worker thread (a
generous reading: the design opened the file per request). Results are cached in process with
``functools.lru_cache`` (as many entries as ours keeps), as pydantic models that FastAPI
validates and serializes on every answer, hit or miss. Endpoints are plain ``def`` functions, as
FastAPI advises for blocking I/O, so they run in its thread pool. Served by uvicorn with uvloop
and httptools, one worker, access log off (``bench/servers.py``).
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import threading
from typing import Literal

import duckdb
from fastapi import FastAPI, HTTPException, Query
from pydantic import BaseModel

from market_api.bars import queries
from market_api.bars.schemas import Interval

CACHE_ENTRIES = 10_000


class BarOut(BaseModel):
    timestamp: dt.date
    open: float
    high: float
    low: float
    close: float
    volume: int


class SeriesOut(BaseModel):
    symbol: str
    interval: str
    bars: list[BarOut]


class StatsOut(BaseModel):
    symbol: str
    count: int
    first_date: dt.date | None
    last_date: dt.date | None
    average_close: float | None
    min_low: float | None
    max_high: float | None
    total_return: float | None


_conn = duckdb.connect(os.environ["BASELINE_DUCKDB"], read_only=True)
_local = threading.local()


def _cursor() -> duckdb.DuckDBPyConnection:
    cur = getattr(_local, "cursor", None)
    if cur is None:
        cur = _local.cursor = _conn.cursor()
    return cur


@functools.lru_cache(maxsize=CACHE_ENTRIES)
def _series(
    symbol: str, interval: str, start: dt.date | None, end: dt.date | None, limit: int | None
) -> SeriesOut:
    rows = queries.bars(_cursor(), symbol, Interval(interval), start, end, limit)
    if not rows and not queries.symbol_exists(_cursor(), symbol):
        raise HTTPException(404, f"unknown symbol {symbol}")
    bars = [BarOut(timestamp=r[0], open=r[1], high=r[2], low=r[3], close=r[4], volume=r[5])
            for r in rows]  # fmt: skip
    return SeriesOut(symbol=symbol, interval=interval, bars=bars)


@functools.lru_cache(maxsize=CACHE_ENTRIES)
def _stats(symbol: str, start: dt.date | None, end: dt.date | None) -> StatsOut:
    count, first, last, avg, low, high, ret = queries.stats(_cursor(), symbol, start, end)
    return StatsOut(symbol=symbol, count=count, first_date=first, last_date=last,
                    average_close=avg, min_low=low, max_high=high, total_return=ret)  # fmt: skip


app = FastAPI(title="baseline")


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/instruments/{symbol}/ohlcv", response_model=SeriesOut)
def ohlcv(
    symbol: str,
    start: dt.date | None = None,
    end: dt.date | None = None,
    interval: Literal["1d", "1w", "1mo"] = "1d",
    limit: int | None = Query(None, ge=1, le=100_000),
) -> SeriesOut:
    return _series(symbol.upper(), interval, start, end, limit)


@app.get("/instruments/{symbol}/stats", response_model=StatsOut)
def stats(symbol: str, start: dt.date | None = None, end: dt.date | None = None) -> StatsOut:
    return _stats(symbol.upper(), start, end)
