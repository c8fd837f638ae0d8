"""The embedded instance's event log (``HeldSqliteEventLogStorage``): Dagster's files and schema,
read the same by a stock instance, the webserver's way of following a run kept, and the
``dagster.yaml`` of earlier versions upgraded."""

import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    AssetSpec,
    DagsterEventType,
    DagsterInstance,
    StaticPartitionsDefinition,
    asset,
    materialize,
    multi_asset,
)
from dagster._core.event_api import EventLogRecord
from dagster._core.storage.event_log import SqliteEventLogStorage
from dagster._serdes import serialize_value

from market_pipeline.cli.instance import DAGSTER_YAML, InstanceMode, ensure_instance
from market_pipeline.defs.event_log import (
    LATEST_RECORD,
    HeldSqliteEventLogStorage,
    sync_normal_if_wal,
)

SYMBOLS = ["AAA", "BBB", "CCC", "DDD"]
PARTS = StaticPartitionsDefinition(SYMBOLS)
RANGE = {"dagster/asset_partition_range_start": "AAA", "dagster/asset_partition_range_end": "DDD"}
STOCK_YAML = "stock.yaml"


@asset(partitions_def=PARTS)
def prices(context: AssetExecutionContext) -> None:
    """One partition a run, its materialization Dagster's own."""


@multi_asset(specs=[AssetSpec("bars", skippable=True)], partitions_def=PARTS)
def bars(context: AssetExecutionContext) -> Iterator[AssetMaterialization]:
    """Like ``symbol_pipeline``: a range, one materialization a symbol, yielded as it goes."""
    for symbol in context.partition_keys:
        yield AssetMaterialization(asset_key="bars", partition=symbol, metadata={"rows": 97})
    context.log.info("done")


def _stock(home: Path) -> DagsterInstance:
    """A stock instance over the same folder, as an older version (or a stock reader) opens it."""
    (home / STOCK_YAML).write_text(DAGSTER_YAML)
    return DagsterInstance.from_config(str(home), config_filename=STOCK_YAML)


def _materialized(instance: DagsterInstance, key: str) -> dict[str | None, str]:
    records = instance.fetch_materializations(AssetKey(key), limit=100).records
    return {r.partition_key: r.run_id for r in records}


def test_a_run_written_through_the_held_storage_reads_the_same_from_a_stock_instance(
    tmp_path: Path,
) -> None:
    home = tmp_path / "dagster"
    ensure_instance(home, InstanceMode())
    with DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance.event_log_storage, HeldSqliteEventLogStorage)
        first = materialize([prices], instance=instance, partition_key="AAA")
        ranged = materialize([bars], instance=instance, tags=RANGE)
        assert first.success and ranged.success
        written = _materialized(instance, "bars")
        logs = instance.all_logs(ranged.run_id)
    assert written == dict.fromkeys(SYMBOLS, ranged.run_id)
    assert not list(home.glob("history/runs/*.db-wal")), "closed with the instance: logs folded"
    with _stock(home) as stock:
        assert type(stock.event_log_storage) is SqliteEventLogStorage
        assert _materialized(stock, "bars") == written
        assert _materialized(stock, "prices") == {"AAA": first.run_id}
        assert [e.dagster_event_type for e in stock.all_logs(ranged.run_id)] == [
            e.dagster_event_type for e in logs
        ]
        status = stock.get_status_by_partition(AssetKey("bars"), SYMBOLS, PARTS)
        assert status is not None and set(status.values()) == {status[SYMBOLS[0]]}
        materialized = stock.get_materialized_partitions(AssetKey("bars"))
        assert materialized == set(SYMBOLS), "the UI's partition status: the index shard"


def test_events_reach_the_run_file_itself_which_the_webserver_watches(tmp_path: Path) -> None:
    """The UI follows a running run by watching its ``.db`` file: a burst of materializations
    reaches it within ``CHECKPOINT_SECONDS``, any other event at once, while the run's process
    still holds its connections."""
    with DagsterInstance.from_config(str(_home(tmp_path))) as instance:
        run = materialize([bars], instance=instance, tags=RANGE)
        events = instance.all_logs(run.run_id)
    assert events[-1].dagster_event_type == DagsterEventType.RUN_SUCCESS
    copy = tmp_path / "copy"
    storage = HeldSqliteEventLogStorage(str(copy))
    try:
        storage.store_event_batch(events)
        assert (copy / f"{run.run_id}.db-wal").exists(), "the connection is still held"
        file_only = sqlite3.connect(f"file:{copy / run.run_id}.db?mode=ro&immutable=1", uri=True)
        (count,) = file_only.execute("SELECT count(*) FROM event_logs").fetchone()
        file_only.close()
        assert count == len(events), "the run ended with non-asset events: checkpointed at once"
        stock = SqliteEventLogStorage(str(copy))
        assert len(stock.get_records_for_run(run.run_id).records) == len(events)
    finally:
        storage.dispose()
    assert not (copy / f"{run.run_id}.db-wal").exists(), "closed: the log folded and removed"


ROWS = {
    "event_logs": "*",
    "asset_keys": "asset_key, last_materialization, last_run_id, asset_details, wipe_timestamp, "
    "last_materialization_timestamp, tags, cached_status_data",
    "asset_event_tags": "*",
}
"""What the event log holds, each database's tables (all but the time a key's row was made)."""


def _rows(folder: Path) -> dict[str, dict[str, list[tuple[object, ...]]]]:
    found = {}
    for path in sorted(folder.glob("*.db")):
        conn = sqlite3.connect(path)
        try:
            tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
            found[path.name] = {
                table: conn.execute(f"SELECT {columns} FROM {table} ORDER BY 1").fetchall()
                for table, columns in ROWS.items()
                if table in tables
            }
        finally:
            conn.close()
    return found


def test_materializations_leave_the_rows_dagster_own_storage_writes(tmp_path: Path) -> None:
    """The held storage writes a materialization its own way (statements built once, the event
    serialized once, the asset's key updated first): every row is the stock storage's, new
    assets and known ones, a range's materializations and Dagster's own (with indexed tags)."""
    with DagsterInstance.from_config(str(_home(tmp_path))) as instance:
        runs = [
            materialize([prices], instance=instance, partition_key="AAA"),
            materialize([bars], instance=instance, tags=RANGE),
            materialize([prices], instance=instance, partition_key="BBB"),
        ]
        events = [e for run in runs for e in instance.all_logs(run.run_id)]
    stock = SqliteEventLogStorage(str(tmp_path / "stock"))
    held = HeldSqliteEventLogStorage(str(tmp_path / "held"))
    try:
        for storage in (stock, held):
            for entry in events:
                storage.store_event(entry)
    finally:
        stock.dispose()
        held.dispose()
    written = _rows(tmp_path / "held")
    assert written == _rows(tmp_path / "stock")
    index = written["index.db"]
    materializations = [r for r in index["event_logs"] if r[3] == "ASSET_MATERIALIZATION"]
    assert len(materializations) == 6 and index["asset_event_tags"], "both paths exercised"
    assert [r[0] for r in index["asset_keys"]] == ['["bars"]', '["prices"]']


def test_the_latest_record_is_dagster_serialization_around_the_event_json(
    tmp_path: Path,
) -> None:
    """The asset's latest record reuses the event's JSON; a Dagster whose serialization differs
    is noticed on the first materialization and serialized for as before."""
    with DagsterInstance.from_config(str(_home(tmp_path))) as instance:
        run = materialize([bars], instance=instance, tags=RANGE)
        entries = instance.all_logs(run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION)
    assert len(entries) == len(SYMBOLS)
    for number, entry in enumerate(entries, start=1):
        dagster = serialize_value(EventLogRecord(storage_id=number, event_log_entry=entry))
        assert LATEST_RECORD.format(event=serialize_value(entry), id=number) == dagster


def _home(tmp_path: Path) -> Path:
    home = tmp_path / "instance"
    ensure_instance(home, InstanceMode())
    return home


def test_deleting_a_run_and_wiping_close_the_held_connections_first(tmp_path: Path) -> None:
    home = _home(tmp_path)
    with DagsterInstance.from_config(str(home)) as instance:
        run = materialize([prices], instance=instance, partition_key="BBB")
        instance.delete_run(run.run_id)
        assert instance.all_logs(run.run_id) == []
        assert not _materialized(instance, "prices")
        again = materialize([prices], instance=instance, partition_key="CCC")
        instance.wipe()
        assert instance.all_logs(again.run_id) == []
        assert not _materialized(instance, "prices")


def test_the_file_of_earlier_versions_gets_the_storage_an_edited_one_is_kept(
    tmp_path: Path,
) -> None:
    home = tmp_path / "dagster"
    home.mkdir()
    config = home / "dagster.yaml"
    config.write_text(DAGSTER_YAML)
    ensure_instance(home, InstanceMode())
    text = config.read_text()
    assert "class: HeldSqliteEventLogStorage" in text
    assert f"base_dir: {home.resolve() / 'history' / 'runs'}" in text, "Dagster's own folder"
    moved = tmp_path / "moved"
    home.rename(moved)
    ensure_instance(moved, InstanceMode())
    assert (
        f"base_dir: {moved.resolve() / 'history' / 'runs'}" in (moved / "dagster.yaml").read_text()
    )
    edited = DAGSTER_YAML + "retention:\n  schedule:\n    purge_after_days: 90\n"
    (moved / "dagster.yaml").write_text(edited)
    ensure_instance(moved, InstanceMode())
    assert (moved / "dagster.yaml").read_text() == edited, "the user's file is theirs"


@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_only_a_wal_database_commits_without_a_sync(tmp_path: Path, journal: str) -> None:
    conn = sqlite3.connect(tmp_path / "index.db")
    try:
        conn.execute(f"PRAGMA journal_mode={journal}")
        sync_normal_if_wal(conn, None)
        (sync,) = conn.execute("PRAGMA synchronous").fetchone()
    finally:
        conn.close()
    assert sync == (1 if journal == "wal" else 2), "NORMAL (1) in WAL mode only, else FULL (2)"


STOCK_WRITER = """
import sys
from dagster import AssetMaterialization, DagsterInstance
with DagsterInstance.from_config(sys.argv[1], config_filename=sys.argv[2]) as instance:
    instance.report_runless_asset_event(AssetMaterialization("prices", partition="DDD"))
"""


def test_another_process_writes_and_reads_beside_the_held_connections(tmp_path: Path) -> None:
    """The daemon, the webserver and other runs open the same files while a run holds them."""
    home = _home(tmp_path)
    with DagsterInstance.from_config(str(home)) as instance:
        run = materialize([prices], instance=instance, partition_key="AAA")
        assert list(home.glob("history/runs/*.db-wal")), "held while the instance is open"
        _stock(home).dispose()
        subprocess.run(
            [sys.executable, "-c", STOCK_WRITER, str(home), STOCK_YAML], check=True, timeout=120
        )
        assert _materialized(instance, "prices") == {"AAA": run.run_id, "DDD": ""}
        again = materialize([prices], instance=instance, partition_key="BBB")
    with _stock(home) as stock:
        assert set(_materialized(stock, "prices")) == {"AAA", "BBB", "DDD"}
        assert again.run_id in {r.run_id for r in stock.get_runs()}
