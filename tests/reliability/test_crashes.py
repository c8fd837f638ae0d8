"""``kill -9`` in the middle of a DuckDB upsert and of a Parquet write.

The killed process is the pipeline's own code (writer_process.py) on real files. After each kill
the store must be exactly the state before the batch or exactly the state after it: never half,
never unreadable. Kill moments are spread at random over the measured length of the step (the
seed is printed with every failure, so a failing sequence can be replayed).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl
import pytest

from market_core import data_version
from market_core.atomic import remove_orphaned_tmp
from market_core.handoff import VersionWatch, write_locked
from market_core.home import DataHome
from market_core.processes import owner_tag, process_start
from market_core.schema import COLUMNS, TABLE
from tests.reliability.killer import Worker
from tests.reliability.writer_process import bars, big_frame

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(900)]

KILLS = 20
SEED = int(os.environ.get("RELIABILITY_SEED", "20240517"))


def table(home: DataHome) -> pl.DataFrame:
    """The whole table as a reader that opens the file after the crash sees it."""
    with duckdb.connect(str(home.duckdb_path), read_only=True) as conn:
        return conn.sql(f"SELECT * FROM {TABLE} ORDER BY symbol, timestamp").pl()


def generation_in(frame: pl.DataFrame, *candidates: int) -> int | None:
    """Which generation's bars the table holds exactly, if any of the candidates."""
    for generation in candidates:
        if frame.equals(bars(generation).select(COLUMNS)):
            return generation
    return None


@dataclass(frozen=True)
class Timing:
    """When, after ``begin``, a worker's step ended (``end``) and the worker did (``done``)."""

    end: float
    done: float

    def pick(self, rng: random.Random, kill: int) -> float:
        """Half the kills inside the step, half around its end (commit, close, rename, publish):
        the second half is where a crash is most likely to be caught half done."""
        if kill % 2:
            return rng.uniform(0.8 * self.end, self.done)
        return rng.uniform(0, self.end)


def calibrate(*args: object) -> Timing:
    """Run a worker to its end, timing its step."""
    worker = Worker(*args)
    begin = worker.wait_for("begin")
    end, done = worker.wait_for("end") - begin, worker.wait_for("done") - begin
    assert worker.proc.wait(timeout=60) == 0, worker.lines
    return Timing(end, done)


def kill_after(delay: float, *args: object) -> bool:
    """Start a worker and ``kill -9`` it ``delay`` seconds after its ``begin``.

    True if the signal hit a running worker (not one that had already finished)."""
    worker = Worker(*args)
    worker.wait_for("begin")
    time.sleep(delay)
    return worker.kill()


def test_kill_9_during_the_upsert_leaves_the_table_before_or_after_the_batch(
    tmp_path: Path,
) -> None:
    home = DataHome(tmp_path / "home")
    rng = random.Random(SEED)
    timing = calibrate("upsert", home.root, 1)
    state, landed = 1, Counter[str]()
    reader = VersionWatch(home)  # as a running API follows the data version
    for generation in range(2, 2 + KILLS):
        version = reader.current()
        delay = timing.pick(rng, generation)
        killed = kill_after(delay, "upsert", home.root, generation)
        where = f"kill at +{delay:.3f}s, step ends +{timing.end:.3f}s (seed {SEED})"
        seen = generation_in(table(home), state, generation)
        assert seen is not None, f"{where}: the table is neither before nor after the batch"
        assert not write_locked(home), f"{where}: the dead writer's lock blocks readers"
        if seen != state:
            assert reader.current() != version, (
                f"{where}: the batch committed but readers were never told (data version)"
            )
        assert VersionWatch(home).current() == reader.current(), f"{where}: readers disagree"
        landed[f"{'after' if seen == generation else 'before'}{'' if killed else ' (ended)'}"] += 1
        state = seen

    last = 2 + KILLS
    worker = Worker("upsert", home.root, last)
    assert worker.finish() == 0, worker.lines
    assert generation_in(table(home), last) == last, f"the run after the kills failed: {landed}"
    version = data_version.read(home.version_path)
    assert reader.current() == version, "the run after the kills publishes what it found"
    worker = Worker("upsert", home.root, last)
    assert worker.finish() == 0, worker.lines
    assert any("0 new, 0 revised" in line for line in worker.lines), "idempotent re-run"
    assert generation_in(table(home), last) == last
    assert data_version.read(home.version_path) == version, "nothing changed, nothing published"
    assert reader.current() == version
    print(f"upsert kills landed: {dict(landed)}")


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_kill_9_during_a_parquet_write_keeps_the_previous_file_readable(tmp_path: Path) -> None:
    """And leaves no temporary file behind for long: the next write removes the killed one's."""
    path = tmp_path / "clean" / "AAA.parquet"
    rng = random.Random(SEED)
    timing = calibrate("parquet", path, 1)
    state, landed, left = 1, Counter[str](), 0
    for generation in range(2, 2 + KILLS):
        delay = timing.pick(rng, generation)
        killed = kill_after(delay, "parquet", path, generation)
        where = f"kill at +{delay:.3f}s, step ends +{timing.end:.3f}s (seed {SEED})"
        frame = pl.read_parquet(path)  # raises if the file is torn
        seen = frame.get_column("generation").unique().to_list()
        assert seen in ([state], [generation]), f"{where}: generations {seen} in one file"
        assert frame.equals(big_frame(seen[0])), f"{where}: the file is not a whole generation"
        assert [p.name for p in path.parent.glob("*.parquet")] == [path.name], where
        tmp = leftovers(path.parent)  # the just-killed writer's, if any; none of earlier ones
        assert len(tmp) <= 1, f"{where}: temporary files of earlier kills remain: {tmp}"
        left += len(tmp)
        landed[
            f"{'after' if seen == [generation] else 'before'}{'' if killed else ' (ended)'}"
        ] += 1
        state = seen[0]
    print(f"parquet kills landed: {dict(landed)}; {left} left a temporary file")
    assert left, "no kill landed inside a write: the clean-up was never exercised"
    worker = Worker("parquet", path, 2 + KILLS)
    assert worker.finish() == 0, worker.lines
    assert leftovers(path.parent) == []
    assert pl.read_parquet(path).equals(big_frame(2 + KILLS))


def test_the_sweep_removes_temporary_files_of_writers_gone_and_only_those(
    tmp_path: Path,
) -> None:
    """A pid reused by a live process (this one, started at another time) counts as gone."""
    folder = tmp_path / "clean"
    folder.mkdir()
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    start = process_start(os.getpid())
    assert start is not None, "no /proc: the start time cannot be checked here"
    ours = f".AAA.parquet.{owner_tag()}-0123456789ab.tmp"
    reused = f".BRK.B.parquet.{os.getpid()}-{int(start) + 1}-0123456789ab.tmp"
    dead = f".CCC.parquet.{finished.pid}-1-0123456789ab.tmp"
    others = ["AAA.parquet", ".market_data.version.1.tmp", "notes.tmp", ".x.parquet.1-2-3.tmp"]
    for name in (ours, reused, dead, *others):
        (folder / name).write_bytes(b"x")
    removed = sorted(p.name for p in remove_orphaned_tmp(folder))
    assert removed == sorted([reused, dead])
    assert sorted(p.name for p in folder.iterdir()) == sorted([ours, *others])


def test_loaders_in_parallel_processes_all_commit(tmp_path: Path) -> None:
    """Three loads at once on one DuckDB file: each waits for the lock, none fails, none is lost."""
    home = DataHome(tmp_path / "home")
    prefixes = ("A", "B", "C")
    workers = [Worker("upsert", home.root, 1, prefix) for prefix in prefixes]
    assert [w.finish() for w in workers] == [0, 0, 0], [w.lines[-5:] for w in workers]
    expected = pl.concat([bars(1, prefix) for prefix in prefixes]).select(COLUMNS)
    assert table(home).equals(expected)
    assert not write_locked(home)
