"""Deterministic data sets: raw Parquet per symbol, and a full ``ohlcv_data`` DuckDB file.

The DuckDB file also holds a ``corporate_actions`` table, so that adjusted answers do real work:
per symbol one to three splits (a reverse one among them now and then) on seeded random days,
and a dividend every quarter (the first trading day from the 10th of February, May, August and
November), of about 0.5 % of that day's close. It is added to a file built before it existed
(its own done-marker, ``ACTIONS_VERSION``), without rebuilding the bars.

It also holds an ``ohlcv_intraday`` table for the intraday miss benchmark: 1-minute bars of the
regular session (390 a day, 09:30 to 15:59 New York time) for the first ``INTRADAY_SYMBOLS``
symbols over the data set's last ``INTRADAY_SESSIONS`` trading days, seeded random walks around
each day's daily open, added with a done-marker of its own (``INTRADAY_VERSION``) like the
corporate actions.

The raw files have the pipeline's raw schema (``market_pipeline.daily.fetch.RAW_SCHEMA``: values as
strings, newest bar first, as Alpha Vantage sends them), so ``clean_symbols`` reads them exactly
as it reads fetched ones. Prices are seeded random walks on weekdays; about one bar in two
thousand is broken the way real answers are (an empty close, high below low) so validation has
rejects to write. A data set is generated once into ``bench/data/`` and reused until its
parameters change; it is never committed.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import polars as pl

from bench.harness import DATA_DIR
from market_core.schema import (
    ACTIONS_COLUMNS,
    ACTIONS_TABLE,
    CREATE_ACTIONS_SQL,
    CREATE_INTRADAY_SQL,
    CREATE_TABLE_SQL,
    DIVIDEND,
    INTRADAY_TABLE,
    SPLIT,
    TABLE,
)
from market_pipeline.daily.fetch import RAW_SCHEMA

FIRST_DAY = dt.date(2005, 1, 3)
LAST_DAY = dt.date(2024, 12, 31)
NEXT_DAY = dt.date(2025, 1, 2)
"""The bar a daily increment adds (the next trading day after ``LAST_DAY``)."""
SEED = 20_050_103
FORMAT_VERSION = 1
"""Bump to regenerate every data set after a change to how they are made."""
ACTIONS_VERSION = 1
"""Bump to rebuild only the ``corporate_actions`` table of every data set (bars are kept)."""
SPLIT_FACTORS = (2.0, 2.0, 3.0, 1.5, 4.0, 7.0, 0.5, 0.1)
"""Drawn from for each split; 0.5 and 0.1 are reverse splits."""
CHUNK_SYMBOLS = 100
INTRADAY_VERSION = 1
"""Bump to rebuild only the ``ohlcv_intraday`` table of every data set."""
INTRADAY_SYMBOLS = 100
INTRADAY_SESSIONS = 20
SESSION_MINUTES = 390
"""Bars of one regular session of 1-minute bars: 09:30 to 15:59."""
SESSION_OPEN = dt.time(9, 30)
Log = Callable[[str], None]
FETCHED_AT = dt.datetime(2025, 1, 2, 21, 0, tzinfo=dt.UTC)


@dataclass(frozen=True)
class DataSet:
    symbols: int
    first_day: dt.date = FIRST_DAY

    @property
    def root(self) -> Path:
        return DATA_DIR / f"v{FORMAT_VERSION}-{self.symbols}x{self.first_day.isoformat()}"

    @property
    def raw_dir(self) -> Path:
        return self.root / "raw"

    @property
    def duckdb_path(self) -> Path:
        """The full table, as the API benchmarks read it."""
        return self.root / "api" / "market_data.duckdb"

    @property
    def names(self) -> list[str]:
        return symbol_names(self.symbols)

    def days(self) -> np.ndarray:
        return weekdays(self.first_day, LAST_DAY)


def connect(path: Path) -> duckdb.DuckDBPyConnection:
    """A read-write connection that prints no progress bar on the console."""
    conn = duckdb.connect(str(path))
    conn.execute("SET enable_progress_bar = false")
    return conn


def symbol_names(count: int) -> list[str]:
    return [f"S{i:04d}" for i in range(count)]


def weekdays(first: dt.date, last: dt.date) -> np.ndarray:
    days = np.arange(np.datetime64(first), np.datetime64(last) + 1, dtype="datetime64[D]")
    return days[np.is_busday(days)]


def _walks(rng: np.random.Generator, symbols: int, days: int) -> dict[str, np.ndarray]:
    """OHLCV of ``symbols`` random walks, shape (symbols, days), oldest first."""
    start = rng.uniform(20, 400, size=(symbols, 1))
    close = start * np.exp(np.cumsum(rng.normal(0.0002, 0.015, size=(symbols, days)), axis=1))
    prev = np.concatenate([start, close[:, :-1]], axis=1)
    open_ = prev * np.exp(rng.normal(0, 0.004, size=(symbols, days)))
    top, bottom = np.maximum(open_, close), np.minimum(open_, close)
    high = top * (1 + np.abs(rng.normal(0, 0.006, size=(symbols, days))))
    low = bottom * (1 - np.abs(rng.normal(0, 0.006, size=(symbols, days))))
    base = rng.uniform(1e6, 4e7, size=(symbols, 1))
    volume = (base * np.exp(rng.normal(0, 0.3, size=(symbols, days)))).astype(np.int64)
    return {"open": open_, "high": high, "low": low, "close": close, "volume": volume}


def _raw_chunk(names: list[str], days: np.ndarray, rng: np.random.Generator) -> pl.DataFrame:
    """All bars of ``names`` in the raw schema, newest first within each symbol."""
    walks = _walks(rng, len(names), len(days))
    n = len(days)
    prices = {k: np.round(v, 4).ravel() for k, v in walks.items() if k != "volume"}
    frame = pl.DataFrame(
        {
            "symbol": np.repeat(names, n),
            "date": np.tile(days.astype(str), len(names)),
            **prices,
            "volume": walks["volume"].ravel(),
        }
    )
    broken = rng.random(frame.height)
    frame = frame.with_columns(
        pl.col(c).cast(pl.String) for c in ("open", "high", "low", "close", "volume")
    ).with_columns(
        pl.when(pl.Series(broken < 0.0003)).then(pl.lit("")).otherwise(pl.col("close"))
        .alias("close"),
        pl.when(pl.Series(broken > 0.9997)).then(pl.col("low")).otherwise(pl.col("high"))
        .alias("high"),
    )  # fmt: skip
    return frame.with_columns(
        pl.col("symbol").alias("meta_symbol"),
        pl.lit(str(days[-1])).alias("last_refreshed"),
        pl.lit("US/Eastern").alias("time_zone"),
        pl.lit("full").alias("outputsize"),
        pl.lit("bench://generated").alias("source"),
        pl.lit(FETCHED_AT).alias("fetched_at"),
    ).select(list(RAW_SCHEMA))


def ensure_raw(data: DataSet, log: Log = print) -> Path:
    """Generate the raw Parquet files of ``data`` unless they are there already."""
    done = data.root / "raw.done"
    if done.exists():
        return data.raw_dir
    shutil.rmtree(data.raw_dir, ignore_errors=True)
    data.raw_dir.mkdir(parents=True)
    rng = np.random.default_rng(SEED)
    days = data.days()
    log(f"generating {data.symbols} symbols x {len(days)} bars of raw Parquet in {data.raw_dir}")
    names = data.names
    for at in range(0, len(names), CHUNK_SYMBOLS):
        chunk = _raw_chunk(names[at : at + CHUNK_SYMBOLS], days, rng)
        for (symbol,), frame in chunk.group_by("symbol", maintain_order=True):
            frame.cast(RAW_SCHEMA).reverse().write_parquet(  # type: ignore[arg-type]
                data.raw_dir / f"{symbol}.parquet", compression="zstd", statistics=True
            )
    done.touch()
    return data.raw_dir


CAST_SQL = f"""
INSERT INTO {TABLE}
SELECT strptime(date, '%Y-%m-%d') AS timestamp, symbol,
       TRY_CAST(open AS DOUBLE), TRY_CAST(high AS DOUBLE), TRY_CAST(low AS DOUBLE),
       TRY_CAST(close AS DOUBLE), TRY_CAST(volume AS BIGINT)
FROM read_parquet($files)
WHERE TRY_CAST(close AS DOUBLE) IS NOT NULL
  AND TRY_CAST(high AS DOUBLE) >= TRY_CAST(low AS DOUBLE)
ORDER BY symbol, timestamp
"""


def ensure_duckdb(data: DataSet, log: Log = print) -> Path:
    """The full ``ohlcv_data`` table of ``data`` (valid rows only, clustered by symbol, as the
    pipeline's batches leave it) and its ``corporate_actions``, for the API benchmarks."""
    done = data.root / "api.done"
    if not done.exists():
        ensure_raw(data, log)
        data.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
        data.duckdb_path.unlink(missing_ok=True)
        log(f"building {data.duckdb_path}")
        with connect(data.duckdb_path) as conn:
            conn.execute(CREATE_TABLE_SQL)
            conn.execute(CAST_SQL, {"files": str(data.raw_dir / "*.parquet")})
        done.touch()
    ensure_actions(data, log)
    return data.duckdb_path


# One dividend per quarter and symbol, from the bars themselves: deterministic, and the amount
# is a plausible yield on the price of the day.
DIVIDENDS_SQL = f"""
INSERT INTO {ACTIONS_TABLE} ({", ".join(ACTIONS_COLUMNS)})
SELECT symbol, day, '{DIVIDEND}', NULL, round(close * 0.005, 4), day - 21, day + 1, day + 14
FROM (
    SELECT symbol, CAST(timestamp AS DATE) AS day, close
    FROM {TABLE}
    WHERE month(timestamp) IN (2, 5, 8, 11) AND day(timestamp) >= 10
    QUALIFY row_number() OVER (
        PARTITION BY symbol, year(timestamp), month(timestamp) ORDER BY timestamp
    ) = 1
)
"""


def split_events(data: DataSet) -> pl.DataFrame:
    """One to three splits per symbol on seeded random trading days, in ACTIONS_COLUMNS."""
    rng = np.random.default_rng(SEED + 1)
    days = data.days()
    rows = []
    for symbol in data.names:
        picks = rng.choice(len(days), size=int(rng.integers(1, 4)), replace=False)
        for at in sorted(picks):
            factor = float(SPLIT_FACTORS[int(rng.integers(len(SPLIT_FACTORS)))])
            rows.append((symbol, days[at].astype(dt.date), SPLIT, factor))
    frame = pl.DataFrame(
        rows,
        schema={"symbol": pl.String, "ex_date": pl.Date, "kind": pl.String,
                "split_factor": pl.Float64},
        orient="row",
    )  # fmt: skip
    nulls = {"amount": pl.Float64, "declaration_date": pl.Date, "record_date": pl.Date,
             "payment_date": pl.Date}  # fmt: skip
    return frame.with_columns(pl.lit(None, dtype=t).alias(c) for c, t in nulls.items()).select(
        ACTIONS_COLUMNS
    )


def ensure_actions(data: DataSet, log: Log = print) -> None:
    """Give the built DuckDB file its ``corporate_actions`` table, unless it has this version."""
    done = data.root / f"actions-v{ACTIONS_VERSION}.done"
    if done.exists():
        return
    log(f"adding corporate actions to {data.duckdb_path}")
    splits = split_events(data).to_arrow()
    with connect(data.duckdb_path) as conn:
        conn.execute(CREATE_ACTIONS_SQL)
        conn.execute(f"DELETE FROM {ACTIONS_TABLE}")
        conn.register("bench_splits", splits)
        conn.execute(f"INSERT INTO {ACTIONS_TABLE} SELECT * FROM bench_splits")
        conn.unregister("bench_splits")
        conn.execute(DIVIDENDS_SQL)
    for old in data.root.glob("actions-v*.done"):
        old.unlink()
    done.touch()


def intraday_symbols(data: DataSet) -> list[str]:
    return data.names[:INTRADAY_SYMBOLS]


def intraday_sessions(data: DataSet) -> list[dt.date]:
    """The trading days that have 1-minute bars: the data set's last ``INTRADAY_SESSIONS``."""
    return [day.astype(dt.date) for day in data.days()[-INTRADAY_SESSIONS:]]


def _intraday_frame(data: DataSet, opens: dict[tuple[str, dt.date], float]) -> pl.DataFrame:
    """Every 1-minute bar, sorted by symbol and time: a walk from each day's daily open."""
    rng = np.random.default_rng(SEED + 2)
    names, days = intraday_symbols(data), intraday_sessions(data)
    count = len(names) * len(days)
    start = np.array([opens[(s, d)] for s in names for d in days]).reshape(count, 1)
    close = start * np.exp(np.cumsum(rng.normal(0, 0.0007, size=(count, SESSION_MINUTES)), 1))
    open_ = np.concatenate([start, close[:, :-1]], axis=1)
    spread = np.abs(rng.normal(0, 0.0004, size=(2, count, SESSION_MINUTES)))
    high = np.maximum(open_, close) * (1 + spread[0])
    low = np.minimum(open_, close) * (1 - spread[1])
    volume = rng.integers(1_000, 200_000, size=(count, SESSION_MINUTES))
    minute = np.timedelta64(1, "m")
    opening = np.array([np.datetime64(dt.datetime.combine(d, SESSION_OPEN), "m") for d in days])
    stamps = opening[:, None] + np.arange(SESSION_MINUTES) * minute
    return pl.DataFrame(
        {
            "timestamp": np.tile(stamps.ravel(), len(names)).astype("datetime64[us]"),
            "symbol": np.repeat(names, len(days) * SESSION_MINUTES),
            "interval": "1min",
            **{k: np.round(v, 4).ravel() for k, v in
               (("open", open_), ("high", high), ("low", low), ("close", close))},
            "volume": volume.ravel().astype(np.int64),
        }
    )  # fmt: skip


def ensure_intraday(data: DataSet, log: Log = print) -> None:
    """Give the built DuckDB file its ``ohlcv_intraday`` table, unless it has this version."""
    ensure_duckdb(data, log)
    done = data.root / f"intraday-v{INTRADAY_VERSION}.done"
    if done.exists():
        return
    days = intraday_sessions(data)
    log(f"adding {len(intraday_symbols(data))} symbols x {len(days)} sessions of 1-minute bars")
    with connect(data.duckdb_path) as conn:
        found = conn.execute(
            f"SELECT symbol, CAST(timestamp AS DATE), open FROM {TABLE} "
            "WHERE symbol IN (SELECT unnest($symbols)) AND timestamp >= $first",
            {"symbols": intraday_symbols(data), "first": days[0]},
        ).fetchall()
        opens = {(symbol, day): open_ for symbol, day, open_ in found}
        frame = _intraday_frame(data, {k: opens.get(k, 100.0) for k in _keys(data)})
        conn.execute(f"DROP TABLE IF EXISTS {INTRADAY_TABLE}")
        conn.execute(CREATE_INTRADAY_SQL)
        conn.register("bench_intraday", frame.to_arrow())
        conn.execute(f"INSERT INTO {INTRADAY_TABLE} SELECT * FROM bench_intraday")
        conn.unregister("bench_intraday")
    for old in data.root.glob("intraday-v*.done"):
        old.unlink()
    done.touch()


def _keys(data: DataSet) -> list[tuple[str, dt.date]]:
    return [(s, d) for s in intraday_symbols(data) for d in intraday_sessions(data)]
