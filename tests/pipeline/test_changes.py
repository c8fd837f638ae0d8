"""The change log (``stages/changes.py``) through the file store's real load path."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pytest

from market_core.schema import (
    COLUMNS,
    CREATE_CHANGES_SQL,
    CREATE_COMMITS_SQL,
    CREATE_INTRADAY_SQL,
    INTRADAY_COLUMNS,
    INTRADAY_TABLE,
)
from market_pipeline.store.changes import prune, record_changes
from market_pipeline.store.duckdb_file import DuckDBFileStore as FileStore

Change = tuple[int, str, str, dt.datetime, bool]


def bars(symbol: str, days: int, close: float = 10.0, first: int = 1) -> pl.DataFrame:
    stamps = [dt.datetime(2024, 1, first + i) for i in range(days)]
    return pl.DataFrame(
        {
            "timestamp": stamps,
            "symbol": [symbol] * days,
            "open": [close] * days,
            "high": [close + 1] * days,
            "low": [close - 1] * days,
            "close": [close] * days,
            "volume": [1000] * days,
        }
    ).select(COLUMNS)


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(database=str(tmp_path / "market_data.duckdb"))


def changes(store: FileStore) -> list[Change]:
    with duckdb.connect(store.database, read_only=True) as conn:
        rows = conn.execute(
            "SELECT commit_id, symbol, interval, timestamp, revised FROM bar_changes "
            "ORDER BY commit_id, symbol, timestamp"
        ).fetchall()
    return [(int(c), str(s), str(i), t, bool(r)) for c, s, i, t, r in rows]


def commits(store: FileStore) -> list[int]:
    with duckdb.connect(store.database, read_only=True) as conn:
        rows = conn.execute("SELECT commit_id FROM bar_commits ORDER BY commit_id").fetchall()
    return [int(row[0]) for row in rows]


def intraday_bar(symbol: str) -> pl.DataFrame:
    return pl.DataFrame(
        {"timestamp": [dt.datetime(2024, 1, 2, 9, 30)], "symbol": [symbol],
         "interval": ["5min"], "open": [1.0], "high": [2.0], "low": [0.5], "close": [1.5],
         "volume": [10]}
    ).select(INTRADAY_COLUMNS)  # fmt: skip


def test_a_backfill_logs_as_new_only_the_bars_a_stream_can_follow(store: FileStore) -> None:
    store.load_intraday([intraday_bar("AAA")])  # AAA is known by its intraday bars
    store.load([bars("AAA", 3), bars("BBB", 2)])  # BBB had no bar at all: nobody follows it
    logged = [c for c in changes(store) if c[2] == "1d"]
    assert commits(store) == [1, 2], "the backfill's commit takes its id"
    assert {c[0] for c in logged} == {2} and not any(c[4] for c in logged)
    assert [(c[1], c[3].day) for c in logged] == [("AAA", 1), ("AAA", 2), ("AAA", 3)]


def test_a_backfill_of_new_symbols_logs_no_bar(store: FileStore) -> None:
    store.load([bars("AAA", 3), bars("BBB", 2)])
    assert changes(store) == [] and commits(store) == [1]
    store.load([bars("AAA", 1, close=11.0, first=3)])
    assert [(c[0], c[1], c[3].day, c[4]) for c in changes(store)] == [(2, "AAA", 3, True)]


def test_an_identical_reload_records_nothing(store: FileStore) -> None:
    store.load([bars("AAA", 3)])
    before = changes(store)
    stats = store.load([bars("AAA", 3)])
    assert stats.inserted == stats.updated == 0
    assert changes(store) == before
    assert commits(store) == [1], "no commit row, no id used up"


def test_revised_and_new_bars_are_marked_and_unchanged_ones_left_out(store: FileStore) -> None:
    store.load([bars("AAA", 3)])
    revised = bars("AAA", 3).with_columns(
        pl.when(pl.col("timestamp") == dt.datetime(2024, 1, 3))
        .then(pl.lit(11.0))
        .otherwise(pl.col("close"))
        .alias("close")
    )
    store.load([pl.concat([revised, bars("AAA", 1, first=4)]), bars("CCC", 1)])
    second = [c for c in changes(store) if c[0] == 2]
    assert [(c[1], c[3].day, c[4]) for c in second] == [
        ("AAA", 3, True),
        ("AAA", 4, False),
        ("CCC", 1, False),
    ]
    assert commits(store) == [1, 2]
    with duckdb.connect(store.database, read_only=True) as conn:
        logged = conn.execute(
            "SELECT commit_id, close FROM bar_changes WHERE symbol = 'AAA' "
            "AND timestamp = TIMESTAMP '2024-01-03' ORDER BY commit_id"
        ).fetchall()
        stored = conn.execute(
            "SELECT close FROM ohlcv_data WHERE symbol = 'AAA' "
            "AND timestamp = TIMESTAMP '2024-01-03'"
        ).fetchall()
    assert logged == [(2, 11.0)] and stored == [(11.0,)], "each change carries its new values"


def test_a_failed_load_logs_nothing(store: FileStore) -> None:
    store.load([bars("AAA", 2)])
    store.load([bars("AAA", 2, close=11.0)])
    broken = bars("AAA", 2, close=12.0).with_columns(pl.col("volume").cast(pl.String))
    broken = broken.with_columns(pl.lit("not a number").alias("volume"))
    with pytest.raises(duckdb.Error):
        store.load([broken])
    assert commits(store) == [1, 2] and len(changes(store)) == 2


def _age(store: FileStore, commit_ids: list[int], days: int) -> None:
    with duckdb.connect(store.database) as conn:
        conn.execute(
            "UPDATE bar_commits SET committed_at = now() - to_days(CAST(? AS INTEGER)) "
            "WHERE commit_id IN (SELECT unnest(?))",
            [days, commit_ids],
        )


def test_pruning_drops_old_commits_changes_and_keeps_recent_ones(store: FileStore) -> None:
    store.load([bars("AAA", 2)])  # commit 1
    store.load([bars("AAA", 2, close=11.0)])  # commit 2
    store.load([bars("AAA", 2, close=12.0)])  # commit 3
    _age(store, [1, 2], days=30)
    _age(store, [3], days=2)
    store.load([bars("AAA", 1, first=3)])  # commit 4 prunes 1 and 2
    assert commits(store) == [3, 4]
    assert sorted({c[0] for c in changes(store)}) == [3, 4]


def test_pruning_keeps_the_newest_commit_row_even_when_old(tmp_path: Path) -> None:
    with duckdb.connect(str(tmp_path / "log.duckdb")) as conn:
        conn.execute(CREATE_CHANGES_SQL)
        conn.execute(CREATE_COMMITS_SQL)
        for commit in (1, 2):
            conn.execute("INSERT INTO bar_commits VALUES (?, now() - INTERVAL 40 DAY)", [commit])
            conn.execute(
                "INSERT INTO bar_changes (commit_id, symbol, interval, timestamp, revised) "
                "VALUES (?, 'AAA', '1d', TIMESTAMP '2024-01-01', false)",
                [commit],
            )
        prune(conn, keep_days=7)
        assert conn.execute("SELECT commit_id FROM bar_commits").fetchall() == [(2,)]
        assert conn.execute("SELECT count(*) FROM bar_changes").fetchall() == [(0,)]


def test_intraday_bars_are_logged_with_their_own_interval(tmp_path: Path) -> None:
    stamp = dt.datetime(2024, 1, 2, 9, 30)
    incoming = pa.table(
        {
            "timestamp": [stamp, stamp],
            "symbol": ["AAA", "AAA"],
            "interval": ["1min", "5min"],
            "open": [1.0, 1.0],
            "high": [2.0, 2.0],
            "low": [0.5, 0.5],
            "close": [1.5, 1.5],
            "volume": [10, 10],
        }
    )
    cols = ", ".join(INTRADAY_COLUMNS)
    with duckdb.connect(str(tmp_path / "log.duckdb")) as conn:
        for sql in (CREATE_INTRADAY_SQL, CREATE_CHANGES_SQL, CREATE_COMMITS_SQL):
            conn.execute(sql)
        conn.register("incoming", incoming)
        assert record_changes(conn, INTRADAY_TABLE) == 2
        conn.execute(f"INSERT INTO {INTRADAY_TABLE} ({cols}) SELECT {cols} FROM incoming")
        assert record_changes(conn, INTRADAY_TABLE) == 0, "identical: nothing"
        conn.unregister("incoming")
        conn.register("incoming", incoming.slice(0, 1).set_column(6, "close", pa.array([1.6])))
        assert record_changes(conn, INTRADAY_TABLE) == 1
        logged = conn.execute(
            "SELECT commit_id, interval, revised FROM bar_changes ORDER BY commit_id, interval"
        ).fetchall()
    assert logged == [(1, "1min", False), (1, "5min", False), (2, "1min", True)]
