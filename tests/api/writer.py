"""A stand-in for the pipeline's loader: the writer side of ``market_core.handoff``.

It does what ``market_pipeline.store.duckdb_file.DuckDBFileStore`` does (take the write lock,
connect read-write retrying lock errors with Dagster's backoff of 0.1, 0.2, 0.4 s..., upsert,
close, record the data version) without importing Dagster, so the API tests stay independent of
the pipeline. Run as a module it is a separate writer process, as the loader is in production:

    python -m tests.api.writer once HOME ROWS_JSON [MAX_RETRIES]   # one load, prints retries
    python -m tests.api.writer loop HOME SECONDS                   # loads until SECONDS pass
    python -m tests.api.writer hold HOME    # holds the file WITHOUT the lock until stdin closes
    python -m tests.api.writer commit HOME ROWS_JSON   # commits under the lock, says
                                            # "committed", then waits (for a kill -9) before
                                            # its close and its data-version record
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb

from market_core.handoff import exclusive_write
from market_core.home import DataHome
from market_core.schema import CREATE_TABLE_SQL, TABLE

Row = tuple[datetime, str, float, float, float, float, int]

UPSERT_SQL = f"""
INSERT INTO {TABLE} VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (symbol, timestamp) DO UPDATE SET
    open = excluded.open, high = excluded.high, low = excluded.low,
    close = excluded.close, volume = excluded.volume
"""

# A connection refused because another process holds the file (IOException), or, inside one
# process, because that process still has it open read-only (ConnectionException).
LOCK_ERRORS = (duckdb.IOException, duckdb.ConnectionException)


class WriteFailed(RuntimeError):
    pass


def connect_with_backoff(
    path: Path, max_retries: int = 10
) -> tuple[duckdb.DuckDBPyConnection, int]:
    """Dagster's ``backoff`` as DuckDBResource uses it: 0.1 s, doubling, ``max_retries`` times."""
    delay = 0.1
    for attempt in range(max_retries + 1):
        try:
            return duckdb.connect(str(path)), attempt
        except LOCK_ERRORS:
            if attempt == max_retries:
                raise
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


def load(home: DataHome, rows: Sequence[Row], max_retries: int = 10) -> int:
    """Upsert ``rows`` the way the pipeline does; return how many connect retries it took."""
    with exclusive_write(home) as handoff:
        conn, retries = connect_with_backoff(home.duckdb_path, max_retries)
        try:
            conn.execute(CREATE_TABLE_SQL)
            conn.executemany(UPSERT_SQL, [list(row) for row in rows])
        finally:
            conn.close()
        handoff.finish(changed=True)
    return retries


def commit_and_wait(home: DataHome, rows: Sequence[Row]) -> None:
    """Commit ``rows`` under the write lock, then wait for stdin to close (or a kill -9)."""
    with exclusive_write(home):
        conn, _ = connect_with_backoff(home.duckdb_path)
        conn.execute(CREATE_TABLE_SQL)
        conn.executemany(UPSERT_SQL, [list(row) for row in rows])
        print("committed", flush=True)
        sys.stdin.read()


def _loop(home: DataHome, seconds: float) -> dict[str, int]:
    """Write one new AAPL bar per iteration for ``seconds``; count writes and failures."""
    writes = failures = 0
    day = date(2030, 1, 1)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        row: Row = (datetime.combine(day, datetime.min.time()), "AAPL", 1.0, 2.0, 0.5, 1.5, 10)
        try:
            load(home, [row])
            writes += 1
        except Exception as exc:  # counted and reported, the parent asserts none happened
            print(f"write failed: {exc!r}", file=sys.stderr)
            failures += 1
        day += timedelta(days=1)
        time.sleep(0.05)
    return {"writes": writes, "failures": failures}


def _rows(text: str) -> list[Row]:
    return [
        (datetime.fromisoformat(r[0]), r[1], r[2], r[3], r[4], r[5], r[6]) for r in json.loads(text)
    ]


def main(argv: list[str]) -> None:
    mode, home = argv[0], DataHome(Path(argv[1]))
    if mode == "once":
        retries = load(home, _rows(argv[2]), max_retries=int(argv[3]) if len(argv) > 3 else 10)
        print(json.dumps({"retries": retries}))
    elif mode == "commit":
        commit_and_wait(home, _rows(argv[2]))
    elif mode == "loop":
        print(json.dumps(_loop(home, float(argv[2]))))
    elif mode == "hold":
        conn = duckdb.connect(str(home.duckdb_path))
        print("holding", flush=True)
        sys.stdin.read()
        conn.close()
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main(sys.argv[1:])
