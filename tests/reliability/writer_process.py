"""The pipeline's writers as separate processes: to kill, to run side by side, to load in a loop.

``python -m tests.reliability.writer_process upsert HOME GEN [PREFIX]`` writes the clean files
of generation GEN (symbols PREFIX000..PREFIX099, default S) and runs the pipeline's load stage
(``BatchRunner`` with ``ohlcv_data`` only: the real ``DuckDBFileStore.load``, with its write
lock, ``upsert`` and data-version record) over all its symbols, in one batch.
``... parquet PATH GEN`` writes one big frame with ``write_parquet_atomic``.
``... loop HOME SECONDS [PAUSE]`` loads generation after generation of symbols L000..L099,
as a schedule would, while the API is under load.

Both print ``begin`` just before the step a test wants to interrupt, ``end`` after it, and
``done`` last, flushing each line, so the killer can aim. Every generation's content is a pure
function of GEN: after a kill the test knows exactly what "before" and "after" look like.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl

SYMBOLS = 100
FIRST_DAY = dt.datetime(2000, 1, 3)
PARQUET_ROWS = 10_000_000


def say(word: str) -> None:
    print(word, flush=True)


def days_in(generation: int) -> int:
    """Each generation adds bars: a batch both revises every stored bar and inserts new ones."""
    return 2_000 + 20 * generation


def bars(generation: int, prefix: str = "S") -> pl.DataFrame:
    """Generation ``generation`` of every symbol, in the clean schema, sorted like the table."""
    days = days_in(generation)
    base = pl.DataFrame({"day": pl.int_range(days, eager=True)}).join(
        pl.DataFrame({"symbol": [f"{prefix}{i:03d}" for i in range(SYMBOLS)]}), how="cross"
    )
    price = (pl.col("day") % 997).cast(pl.Float64) / 10 + generation
    return base.select(
        "symbol",
        (pl.lit(FIRST_DAY) + pl.duration(days=pl.col("day"))).dt.cast_time_unit("us")
        .alias("timestamp"),
        price.alias("open"),
        (price + 1).alias("high"),
        (price - 1).alias("low"),
        price.alias("close"),
        pl.lit(generation, dtype=pl.Int64).alias("volume"),
        pl.lit(None, dtype=pl.String).alias("flags"),
    ).sort("symbol", "timestamp")  # fmt: skip


def big_frame(generation: int) -> pl.DataFrame:
    """Poorly compressible, so writing it takes a while; ``generation`` marks every row."""
    noise = pl.int_range(PARQUET_ROWS, eager=True).hash(seed=generation)
    return pl.DataFrame({"noise": noise, "generation": pl.repeat(generation, PARQUET_ROWS,
                                                                 eager=True)})  # fmt: skip


def load(home_dir: str, generation: int, prefix: str = "S") -> bool:
    """One load of a generation through the pipeline's load stage; True if every symbol loaded."""
    from market_core.assets import OHLCV
    from market_core.home import DataHome
    from market_pipeline.bars.rules import Rules
    from market_pipeline.runs import batch
    from market_pipeline.store.duckdb_file import DuckDBFileStore
    from market_pipeline.store.files import write_parquet_atomic

    home = DataHome(Path(home_dir))
    frame = bars(generation, prefix)
    symbols = frame.get_column("symbol").unique().sort().to_list()
    for symbol, part in frame.partition_by("symbol", as_dict=True).items():
        write_parquet_atomic(part, home.clean_file(str(symbol[0])))
    runner = batch.BatchRunner(
        home=home,
        client=None,
        duckdb=DuckDBFileStore(database=str(home.duckdb_path)),
        stages=[OHLCV],
        settings=batch.BatchSettings(outputsize="compact", rules=Rules()),
        log=say,
    )
    return not runner.run(symbols).failures


def upsert(home_dir: str, generation: int, prefix: str = "S") -> int:
    """``load``, announcing the upsert itself (``begin``/``end``) for the killer."""
    from market_pipeline.store import duckdb_file as storage

    real_upsert = storage.upsert

    def announced(*args: Any) -> Any:
        say("begin")
        stats = real_upsert(*args)
        say("end")
        return stats

    storage.upsert = announced  # type: ignore[assignment]
    ok = load(home_dir, generation, prefix)
    say("done")
    return 0 if ok else 1


def loop(home_dir: str, seconds: int, pause: str = "1.0") -> int:
    """Loads generation 1, 2, 3... of symbols L000..L099 for ``seconds``, resting ``pause``
    seconds between loads; each load revises every stored bar and adds new ones."""
    deadline = time.monotonic() + seconds
    failed = 0
    generation = 0
    while time.monotonic() < deadline:
        generation += 1
        ok = load(home_dir, generation, "L")
        failed += not ok
        say(f"load {generation} {'ok' if ok else 'FAILED'}")
        time.sleep(float(pause))
    say(f"loads {generation} failed {failed}")
    say("done")
    return 1 if failed else 0


def parquet(path: str, generation: int) -> int:
    from market_pipeline.store.files import write_parquet_atomic

    frame = big_frame(generation)
    say("begin")
    write_parquet_atomic(frame, Path(path))
    say("end")
    say("done")
    return 0


if __name__ == "__main__":
    mode, target, number, *rest = sys.argv[1:]
    run = {"upsert": upsert, "parquet": parquet, "loop": loop}[mode]
    raise SystemExit(run(target, int(number), *rest))  # type: ignore[operator]
