"""The push stream in the multi-machine mode: a replica on a data home of its own follows the
change log in the shared lake (a real PostgreSQL catalog), while the pipeline's lake store
(``LakeStore``) commits from this process, as a loader on another machine would."""

from __future__ import annotations

from pathlib import Path

import duckdb

from market_core.lake import connect
from market_pipeline.store.lake import LakeStore
from tests.api.test_stream import bars, day, stream
from tests.cluster.services import PostgresService
from tests.cluster.test_lake_api import Lake, new_lake
from tests.served_api import serve


def writer(lake: Lake) -> LakeStore:
    return LakeStore(
        postgres_url=lake.url,
        shared_home=str(lake.shared),
        data_home=str(lake.machine("writer").root),
    )


def change_log(lake: Lake) -> list[tuple[int, str, bool]]:
    conn = connect(lake.settings(), read_only=True)
    try:
        rows = conn.execute(
            "SELECT commit_id, symbol, revised FROM bar_changes ORDER BY commit_id, symbol, "
            "timestamp"
        ).fetchall()
    finally:
        conn.close()
    return [(int(c), str(s), bool(r)) for c, s, r in rows]


def test_a_replica_streams_the_lakes_commits_and_resumes(
    postgres: PostgresService, tmp_path: Path
) -> None:
    lake = new_lake(postgres, tmp_path)
    store = writer(lake)
    store.load([bars("AAPL", 5), bars("MSFT", 3, close=20.0)])  # commit 1
    store.load([bars("AAPL", 5)])  # identical: no commit
    assert change_log(lake) == [], "a backfill of symbols nobody can follow yet logs no bar"

    with serve(lake.machine("api"), tmp_path / "api.log", **lake.env()) as api:
        with stream(api.base, "/stream?symbols=AAPL,MSFT") as client:
            opening = client.events(2)
            assert [(e.id, e.bar["symbol"], e.bar["timestamp"]) for e in opening] == [
                ("1", "AAPL", day(4)),
                ("1", "MSFT", day(2)),
            ]
            revised = bars("AAPL", 1, close=12.0, first=4)
            store.load([revised, bars("AAPL", 1, first=5), bars("MSFT", 1, first=3)])
            events = client.events(3)
            seen = [(e.id, e.bar["symbol"], e.bar["timestamp"], e.bar["revised"]) for e in events]
            assert seen == [
                ("2.0", "AAPL", day(4), True),
                ("2.1", "AAPL", day(5), False),
                ("2.2", "MSFT", day(3), False),
            ]
            assert events[0].bar["close"] == 12.0
        with stream(api.base, "/stream?symbols=AAPL,MSFT", {"Last-Event-ID": "2.0"}) as client:
            assert [e.id for e in client.events(2)] == ["2.1", "2.2"]
        with stream(api.base, "/instruments/AAPL/stream", {"Last-Event-ID": "x"}) as client:
            assert client.next_event().event == "reset"
            newest = client.next_event()
            assert (newest.id, newest.bar["timestamp"]) == ("2", day(5))


def test_a_failed_lake_load_logs_no_change(postgres: PostgresService, tmp_path: Path) -> None:
    lake = new_lake(postgres, tmp_path)
    store = writer(lake)
    store.load([bars("AAPL", 2)])
    store.load([bars("AAPL", 2, close=11.0)])
    broken = bars("AAPL", 2, close=12.0).with_columns(volume=bars("AAPL", 2)["symbol"])
    try:
        store.load([broken])
    except duckdb.Error:
        pass
    else:
        raise AssertionError("a volume of text must fail the load")
    assert change_log(lake) == [(2, "AAPL", True), (2, "AAPL", True)]
