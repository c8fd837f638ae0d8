"""An API replica's local copy of the lake (``market_api.readers.replica``): it follows every
commit from other processes (inserts, MERGE revisions, deletes, the change log), answers the
replica's questions of its snapshot, leaves older snapshots and ``as_of`` to the lake, survives
the lake's maintenance, and a restarted replica brings its copy forward instead of copying the
lake again.

A real PostgreSQL holds the catalog; commits come from processes of their own (``run_sql``,
``Lake.commit``) or from the pipeline's ``LakeStore`` in this process, as from another machine.
Which store answered is asked of the cursor itself (``current_database()``: the copy's file is
``copy``), so nothing of ours is mocked or peeked at.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import duckdb
import pytest

from market_api.readers.lake import LakeReader
from market_api.readers.replica import COPY_FILE, COPY_FOLDER, KEYS
from market_core.lake import connect
from market_core.schema import TABLE
from market_pipeline.store.lake import LakeStore
from tests.api.test_stream import bars
from tests.cluster.services import PostgresService
from tests.cluster.test_intraday_lake_api import MINUTES, run_sql
from tests.cluster.test_lake_api import (
    AAPL,
    MSFT,
    SPLITS,
    Lake,
    as_json_bar,
    get,
    lake_snapshot,
    new_lake,
)
from tests.served_api import Served, serve

WAIT_SECONDS = 60.0
"""Bound of every wait for the copy to serve a commit (it takes a fraction of a second; the
bound only keeps a broken copy from hanging the suite)."""

REVISE = (
    "MERGE INTO ohlcv_data AS t USING (SELECT CAST(? AS TIMESTAMP) AS timestamp, "
    "CAST(? AS VARCHAR) AS symbol, CAST(? AS DOUBLE) AS close) AS s "
    "ON t.symbol = s.symbol AND t.timestamp = s.timestamp "
    "WHEN MATCHED THEN UPDATE SET close = s.close"
)
DELETE = "DELETE FROM ohlcv_data WHERE symbol = ? AND timestamp >= CAST(? AS TIMESTAMP)"
INTRADAY = "INSERT INTO ohlcv_intraday VALUES (?, ?, ?, ?, ?, ?, ?, ?)"


def wait_for(what: str, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not check():
        assert time.monotonic() < deadline, f"not within {WAIT_SECONDS:.0f} s: {what}"
        time.sleep(0.05)


Tables = dict[str, list[tuple[Any, ...]]]


def table_rows(cur: duckdb.DuckDBPyConnection, at: str = "") -> Tables:
    return {
        table: cur.execute(f"SELECT * FROM {table} {at} ORDER BY ALL").fetchall() for table in KEYS
    }


def lake_tables(lake: Lake, snapshot: int) -> Tables:
    conn = connect(lake.settings(), read_only=True)
    try:
        return table_rows(conn, f"AT (VERSION => {snapshot})")
    finally:
        conn.close()


def where_and_what(cur: duckdb.DuckDBPyConnection) -> tuple[str, Tables]:
    """Which database answered (the copy's file is ``copy``), and every copied table."""
    row = cur.execute("SELECT current_database()").fetchone()
    assert row is not None
    return str(row[0]), table_rows(cur)


@pytest.fixture
def lake(postgres: PostgresService, tmp_path: Path) -> Lake:
    lake = new_lake(postgres, tmp_path)
    lake.commit(AAPL + MSFT, SPLITS)
    return lake


@pytest.fixture
def reader(lake: Lake, tmp_path: Path) -> Iterator[LakeReader]:
    reader = LakeReader(lake.settings(), copy_folder=tmp_path / "copy")
    try:
        yield reader
    finally:
        reader.shutdown()


def copy_serves(reader: LakeReader, snapshot: int) -> bool:
    """The reader's data version is ``snapshot`` and a question of it is answered by the copy."""
    reader.poll()
    version = reader.data_version()
    return version == str(snapshot) and reader.run_at(version, where_and_what)[0] == "copy"


def assert_copy_is_the_lake(reader: LakeReader, lake: Lake) -> int:
    snapshot = lake_snapshot(lake)
    wait_for(f"the copy serves snapshot {snapshot}", lambda: copy_serves(reader, snapshot))
    where, tables = reader.run_at(str(snapshot), where_and_what)
    assert where == "copy"
    assert tables == lake_tables(lake, snapshot)
    return snapshot


def writer(lake: Lake) -> LakeStore:
    return LakeStore(lake.url, str(lake.shared), str(lake.machine("writer").root))


def maintain(lake: Lake, *calls: str) -> None:
    """The maintenance job's calls, committed from a connection of their own."""
    conn = connect(lake.settings())
    try:
        for call in calls:
            conn.execute(f"CALL {call}")
    finally:
        conn.close()


def copy_to_newest(lake: Lake, folder: Path) -> None:
    """A reader that brings the copy in ``folder`` to the lake's newest snapshot, then stops."""
    reader = LakeReader(lake.settings(), copy_folder=folder)
    try:
        assert_copy_is_the_lake(reader, lake)
    finally:
        reader.shutdown()


def logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records]


def test_the_copy_follows_inserts_revisions_and_deletes_exactly(
    lake: Lake, reader: LakeReader
) -> None:
    first = assert_copy_is_the_lake(reader, lake)
    assert len(lake_tables(lake, first)[TABLE]) == len(AAPL) + len(MSFT)

    # A MERGE revision of one bar, from a process of its own.
    day, _, *_, close, _ = AAPL[10]
    run_sql(lake, [(REVISE, [[day, "AAPL", close + 5.0]])])
    revised = assert_copy_is_the_lake(reader, lake)
    rows = reader.run_at(
        str(revised),
        lambda cur: cur.execute(
            f"SELECT close FROM {TABLE} WHERE symbol = 'AAPL' AND timestamp = ?", [day]
        ).fetchall(),
    )
    assert rows == [(close + 5.0,)]

    # Deletes for good, and a delete and insert of one key in one commit (a replacement).
    run_sql(lake, [(DELETE, [["MSFT", MSFT[30][0]]])])
    assert_copy_is_the_lake(reader, lake)
    lake.commit([(*AAPL[0][:5], 1.25, *AAPL[0][6:])])
    assert_copy_is_the_lake(reader, lake)

    # The pipeline's own load: MERGE of new and revised bars, with the change log it writes.
    store = writer(lake)
    store.load([bars("NVDA", 5)])
    store.load([bars("NVDA", 2, close=12.0, first=4)])
    snapshot = assert_copy_is_the_lake(reader, lake)
    assert lake_tables(lake, snapshot)["bar_changes"], "the load logged its changes"

    # Intraday bars, and several commits at once (the copy may take them in one step).
    run_sql(lake, [(INTRADAY, [list(row) for row in MINUTES])])
    run_sql(lake, [(REVISE, [[AAPL[11][0], "AAPL", 1.5]])])
    run_sql(lake, [(DELETE, [["AAPL", AAPL[50][0]]])])
    assert_copy_is_the_lake(reader, lake)


def test_older_snapshots_and_as_of_are_read_from_the_lake(lake: Lake, reader: LakeReader) -> None:
    before = assert_copy_is_the_lake(reader, lake)
    run_sql(lake, [(DELETE, [["AAPL", AAPL[0][0]]])])
    after = assert_copy_is_the_lake(reader, lake)

    where, tables = reader.run_at(str(before), where_and_what)
    assert where != "copy"
    assert tables == lake_tables(lake, before)
    assert len(tables[TABLE]) == len(reader.run_at(str(after), where_and_what)[1][TABLE]) + len(
        AAPL
    )
    moment = lake.snapshot_time(before)
    where, tables = reader.run_at(str(after), where_and_what, as_of=moment)
    assert where != "copy"
    assert tables == lake_tables(lake, before)


def test_the_copy_outlives_the_lakes_maintenance(lake: Lake, reader: LakeReader) -> None:
    """Flushing inlined rows and merging files commit snapshots that change no row; a row
    revised after a merge still reaches the copy."""
    store = writer(lake)
    for close in (11.0, 12.0, 13.0):  # small commits: rows kept in the catalog (inlined)
        store.load([bars("NVDA", 3, close=close)])
    assert_copy_is_the_lake(reader, lake)
    maintain(lake, "ducklake_flush_inlined_data('lake')", "ducklake_merge_adjacent_files('lake')")
    assert_copy_is_the_lake(reader, lake)
    store.load([bars("NVDA", 1, close=14.0, first=1)])
    run_sql(lake, [(DELETE, [["NVDA", bars("NVDA", 3)["timestamp"][2].isoformat()]])])
    assert_copy_is_the_lake(reader, lake)


def test_a_restarted_reader_brings_its_copy_forward(
    lake: Lake, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    copy_to_newest(lake, tmp_path / "copy")
    run_sql(lake, [(REVISE, [[AAPL[3][0], "AAPL", 2.5]])])  # while no replica runs
    writer(lake).load([bars("NVDA", 4)])

    caplog.set_level(logging.INFO, logger="market_api.readers.replica")
    caplog.clear()  # the first reader's lines, kept when an earlier test left the level at INFO
    copy_to_newest(lake, tmp_path / "copy")
    said = logged(caplog)
    assert any("opened; catching up" in line for line in said), said
    assert not any("built at" in line for line in said), said


def test_a_copy_whose_snapshot_expired_is_built_again(
    lake: Lake, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Snapshots expired while the replica was away take the change feed with them: the copy
    cannot be brought forward and is copied from the lake again."""
    copy_to_newest(lake, tmp_path / "copy")
    run_sql(lake, [(DELETE, [["MSFT", MSFT[0][0]]])])
    run_sql(lake, [(REVISE, [[AAPL[3][0], "AAPL", 2.5]])])
    maintain(lake, "ducklake_expire_snapshots('lake', older_than => now())")

    caplog.set_level(logging.INFO, logger="market_api.readers.replica")
    caplog.clear()  # the first reader's lines, kept when an earlier test left the level at INFO
    copy_to_newest(lake, tmp_path / "copy")
    said = logged(caplog)
    assert any("built again" in line for line in said), said


# The replica as served: `make api` on a data home of its own.


def copy_file_tables(served_home: Path) -> tuple[int, Tables]:
    """The copy a stopped replica left: its snapshot and its tables."""
    conn = duckdb.connect(str(served_home / COPY_FOLDER / COPY_FILE), read_only=True)
    try:
        row = conn.execute("SELECT snapshot FROM lake_copy_state").fetchone()
        assert row is not None
        return int(row[0]), table_rows(conn)
    finally:
        conn.close()


def stopped(served: Served) -> None:
    served.proc.send_signal(signal.SIGTERM)
    served.proc.wait(timeout=30)


def bars_of(api: Served, symbol: str, query: str = "") -> list[dict[str, Any]]:
    answer = get(api, f"/instruments/{symbol}/ohlcv{query}")
    assert answer.status_code == 200, answer.text
    bars: list[dict[str, Any]] = answer.json()["bars"]
    return bars


def test_a_replica_serves_every_commit_and_keeps_its_copy(lake: Lake, tmp_path: Path) -> None:
    home = lake.machine("api")
    first = lake_snapshot(lake)
    with serve(home, tmp_path / "api.log", **lake.env()) as api:
        assert bars_of(api, "AAPL") == [as_json_bar(bar) for bar in AAPL]
        day, _, *_, close, _ = AAPL[20]
        revision = run_sql(lake, [(REVISE, [[day, "AAPL", close + 3.0]])])
        wait_for("the revision is served", lambda: bars_of(api, "AAPL")[20]["close"] == close + 3)
        deletion = run_sql(lake, [(DELETE, [["MSFT", MSFT[35][0]]])])
        wait_for("the deletion is served", lambda: len(bars_of(api, "MSFT")) == 35)
        assert get(api, "/health").json()["data_version"] == str(deletion)
        # As of the revision's commit: the bars then, MSFT's last five among them.
        moment = quote(lake.snapshot_time(revision).isoformat(), safe="")
        then = bars_of(api, "MSFT", f"?as_of={moment}")
        assert then == [as_json_bar(bar) for bar in MSFT]
        assert bars_of(api, "AAPL", f"?as_of={moment}")[20]["close"] == close + 3
        stopped(api)
    kept, tables = copy_file_tables(home.root)
    assert first < kept <= deletion
    assert tables == lake_tables(lake, kept)

    # Commits while the replica is down; started again, it brings its copy forward.
    writer(lake).load([bars("NVDA", 3)])
    later = run_sql(lake, [(DELETE, [["AAPL", AAPL[55][0]]])])
    log = tmp_path / "api-again.log"
    with serve(home, log, **lake.env()) as api:
        wait_for("the commits made meanwhile are served", lambda: len(bars_of(api, "AAPL")) == 55)
        assert len(bars_of(api, "NVDA")) == 3
        health = get(api, "/health").json()
        assert health["data_version"] == str(later), (health, log.read_text())
        wait_for("the copy is opened", lambda: "opened; catching up" in log.read_text())
        stopped(api)
    assert "built at" not in log.read_text()
    kept, tables = copy_file_tables(home.root)
    assert tables == lake_tables(lake, kept)
    assert kept == later
