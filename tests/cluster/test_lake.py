"""market_core.lake against a real PostgreSQL catalog, with separate processes for "machines"."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

import duckdb
import pytest

from market_core.env import SettingsError
from market_core.lake import (
    LAKE_ALIAS,
    LakeSettings,
    LakeUnavailable,
    LakeWriteBusy,
    LakeWriteConflict,
    connect,
    install_extensions,
    rollback,
    snapshot_id,
    with_conflict_retry,
    write_lock,
)
from tests.cluster.services import PostgresService

POOL_TIMEOUT_SECONDS = 120
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def lake(postgres: PostgresService, tmp_path: Path) -> LakeSettings:
    return LakeSettings(
        postgres_url=postgres.fresh_database(),
        shared_home=str(tmp_path / "shared"),
        extension_dir=tmp_path / "machine-a" / "duckdb_extensions",
    )


def on_machine(settings: LakeSettings, machine: Path) -> LakeSettings:
    """The same lake as seen from another machine: its own extension folder."""
    return LakeSettings(settings.postgres_url, settings.shared_home, machine / "duckdb_extensions")


def insert_bar(settings: LakeSettings, symbol: str) -> int:
    conn = connect(settings)
    try:
        conn.execute(
            "INSERT INTO ohlcv_data VALUES (TIMESTAMP '2024-01-02', ?, 1, 2, 0.5, 1.5, 100)",
            [symbol],
        )
        return snapshot_id(conn)
    finally:
        conn.close()


def read_symbols(settings: LakeSettings) -> list[str]:
    conn = connect(settings, read_only=True)
    try:
        return [
            row[0] for row in conn.execute("SELECT symbol FROM ohlcv_data ORDER BY 1").fetchall()
        ]
    finally:
        conn.close()


def test_two_processes_share_one_table_and_each_commit_is_a_new_snapshot(
    lake: LakeSettings, tmp_path: Path
) -> None:
    machine_b = on_machine(lake, tmp_path / "machine-b")
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        first = pool.apply_async(insert_bar, (lake, "AAPL")).get(POOL_TIMEOUT_SECONDS)
        second = pool.apply_async(insert_bar, (machine_b, "MSFT")).get(POOL_TIMEOUT_SECONDS)
        seen = pool.apply_async(read_symbols, (machine_b,)).get(POOL_TIMEOUT_SECONDS)
    assert seen == ["AAPL", "MSFT"]
    assert second == first + 1
    assert (tmp_path / "machine-b" / "duckdb_extensions").is_dir()
    reader = connect(lake, read_only=True)
    try:
        assert snapshot_id(reader) == second
    finally:
        reader.close()


def open_at_once(
    settings: LakeSettings, read_only: bool, start: Barrier, results: Queue[int | str]
) -> None:
    start.wait(POOL_TIMEOUT_SECONDS)
    try:
        conn = connect(settings, read_only=read_only)
    except LakeUnavailable as exc:
        results.put(str(exc))
        return
    try:
        results.put(snapshot_id(conn))
    finally:
        conn.close()


def test_machines_opening_a_fresh_catalog_at_once_all_get_one_lake(
    lake: LakeSettings, tmp_path: Path
) -> None:
    machines = [on_machine(lake, tmp_path / f"machine-{i}") for i in range(4)]
    for settings in machines:  # the extensions installed beforehand: the attaches then collide
        with duckdb.connect() as scratch:
            install_extensions(scratch, settings.extensions_dir())
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(len(machines)), context.Queue()
    processes = [
        context.Process(target=open_at_once, args=(settings, i % 2 == 0, start, results))
        for i, settings in enumerate(machines)
    ]
    for process in processes:
        process.start()
    try:
        snapshots = [results.get(timeout=POOL_TIMEOUT_SECONDS) for _ in processes]
    finally:
        for process in processes:
            process.join(POOL_TIMEOUT_SECONDS)
    assert snapshots == [1, 1, 1, 1], "one catalog, its tables created once"


def test_a_reader_before_any_writer_finds_every_table_and_cannot_write(
    lake: LakeSettings,
) -> None:
    conn = connect(lake, read_only=True)
    try:
        tables = conn.execute("SELECT table_name FROM duckdb_tables() ORDER BY 1").fetchall()
        assert tables == [
            ("bar_changes",), ("bar_commits",), ("corporate_actions",), ("listings",),
            ("ohlcv_data",), ("ohlcv_intraday",),
        ]  # fmt: skip
        columns = conn.execute("DESCRIBE ohlcv_data").fetchall()
        assert [c[0] for c in columns] == [
            "timestamp", "symbol", "open", "high", "low", "close", "volume",
        ]  # fmt: skip
        with pytest.raises(duckdb.Error, match="read-only"):
            conn.execute("DELETE FROM ohlcv_data")
        assert conn.execute("SELECT current_database()").fetchone() == (LAKE_ALIAS,)
    finally:
        conn.close()


def test_a_snapshot_is_kept_only_for_a_commit_that_changed_something(lake: LakeSettings) -> None:
    conn = connect(lake)
    try:
        before = snapshot_id(conn)
        conn.execute("DELETE FROM ohlcv_data WHERE symbol = 'NONE'")
        conn.execute("CREATE TABLE IF NOT EXISTS ohlcv_data (timestamp TIMESTAMP)")
        assert snapshot_id(conn) == before
        conn.execute("INSERT INTO ohlcv_data (symbol) VALUES ('AAPL')")
        assert snapshot_id(conn) == before + 1
    finally:
        conn.close()


def _revise(conn: duckdb.DuckDBPyConnection, close: float) -> None:
    conn.execute("UPDATE ohlcv_data SET close = ? WHERE symbol = 'AAPL'", [close])


def test_a_commit_that_loses_to_another_is_run_again_and_lands(lake: LakeSettings) -> None:
    insert_bar(lake, "AAPL")
    mine, other = connect(lake), connect(lake)
    attempts: list[int] = []

    def work() -> None:
        attempts.append(1)
        mine.begin()
        try:
            _revise(mine, 10.0)
            if len(attempts) == 1:  # another writer commits to the table meanwhile
                _revise(other, 20.0)
            mine.commit()
        except BaseException:
            rollback(mine)
            raise

    try:
        with_conflict_retry(work)
        assert len(attempts) == 2
        assert mine.execute("SELECT close FROM ohlcv_data").fetchall() == [(10.0,)]
    finally:
        mine.close()
        other.close()


def test_a_commit_that_always_loses_ends_in_a_clear_error(lake: LakeSettings) -> None:
    insert_bar(lake, "AAPL")
    mine, other = connect(lake), connect(lake)

    def work() -> None:
        mine.begin()
        try:
            _revise(mine, 10.0)
            _revise(other, 20.0)
            mine.commit()
        except BaseException:
            rollback(mine)
            raise

    try:
        with pytest.raises(LakeWriteConflict, match="3 times in a row"):
            with_conflict_retry(work, attempts=3)
        assert other.execute("SELECT close FROM ohlcv_data").fetchall() == [(20.0,)]
    finally:
        mine.close()
        other.close()


def test_a_password_never_appears_in_an_error(postgres: PostgresService, tmp_path: Path) -> None:
    url = f"postgresql://market:s3cr%40t-pw@127.0.0.1:{postgres.port}/nope"
    settings = LakeSettings(url, str(tmp_path / "shared"), tmp_path / "ext")
    with pytest.raises(LakeUnavailable) as caught:
        connect(settings, read_only=True)
    text = str(caught.value)
    assert "s3cr" not in text and "***" in text and "nope" in text
    assert caught.value.__context__ is None and caught.value.__cause__ is None
    assert "s3cr" not in repr(settings)


def test_from_env_is_none_without_postgres_and_refuses_a_lake_without_shared_home() -> None:
    assert LakeSettings.from_env({}) is None
    with pytest.raises(SettingsError, match="MARKET_SHARED_HOME"):
        LakeSettings.from_env({"MARKET_POSTGRES_URL": "postgresql://u:pw@127.0.0.1/market"})
    settings = LakeSettings.from_env(
        {"MARKET_POSTGRES_URL": "postgresql://u@h:5433/m", "MARKET_SHARED_HOME": "/mnt/shared"}
    )
    assert settings is not None and settings.data_path == "/mnt/shared/lake/"
    assert settings.conninfo == "user=u dbname=m host=h port=5433"


HOLD_LOCK = """
import sys
from pathlib import Path
from market_core.lake import LakeSettings, write_lock
with write_lock(LakeSettings(sys.argv[1], sys.argv[2], Path(sys.argv[3]))):
    print("held", flush=True)
    sys.stdin.read()
"""


def test_writers_take_turns_and_a_dead_writer_lets_go(lake: LakeSettings) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, lake.postgres_url, lake.shared_home,
         str(lake.extensions_dir())],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with (
            pytest.raises(LakeWriteBusy, match="write lock"),
            write_lock(lake, timeout_seconds=0.5),
        ):
            pass
        holder.kill()  # SIGKILL: no chance to unlock; its connection drops
        holder.wait(timeout=30)
        with write_lock(lake, timeout_seconds=60):
            pass
    finally:
        holder.kill()
        holder.wait(timeout=30)
