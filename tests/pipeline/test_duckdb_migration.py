"""A data home's DuckDB file written by DuckDB 2.0 is converted for the DuckDB we run, losing
nothing: the 2.0 file is written here by DuckDB 2.0.0 itself (the ``.venv-duckdb2`` that
``make setup`` installs), then converted by the real migration."""

from __future__ import annotations

import subprocess
from datetime import date
from pathlib import Path

import duckdb
import pytest

from market_core import duckdb_migration as migration
from market_core.data_version import fingerprint
from market_core.home import DataHome
from market_core.schema import CREATE_ACTIONS_SQL, CREATE_TABLE_SQL

OLD_PYTHON = migration.OLD_DUCKDB_VENV / "bin" / "python"

WRITE_OLD = """
import sys, duckdb
conn = duckdb.connect(sys.argv[1])
for sql in sys.argv[2:]:
    conn.execute(sql)
conn.close()
"""

BARS = """INSERT INTO ohlcv_data
SELECT TIMESTAMP '2020-01-01' + INTERVAL (i) DAY, 'S' || (i % 7), 10 + i, 12 + i, 9 + i,
       11 + i, 1000 + i
FROM range(5000) AS t(i)"""
ACTIONS = """INSERT INTO corporate_actions VALUES
    ('S1', DATE '2021-06-01', 'split', 4.0, NULL, NULL, NULL, NULL),
    ('S1', DATE '2021-07-01', 'dividend', NULL, 0.25, DATE '2021-06-20', NULL, NULL)"""


def write_with_duckdb_2(path: Path, *statements: str) -> None:
    assert OLD_PYTHON.exists(), (
        "no .venv-duckdb2: run `make setup` (it installs DuckDB 2.0.0 there)"
    )
    subprocess.run([str(OLD_PYTHON), "-c", WRITE_OLD, str(path), *statements], check=True)


@pytest.fixture
def old_home(tmp_path: Path) -> DataHome:
    home = DataHome(tmp_path / "home")
    home.root.mkdir()
    write_with_duckdb_2(
        home.duckdb_path, CREATE_TABLE_SQL, CREATE_ACTIONS_SQL, BARS, ACTIONS,
        "CREATE TABLE notes AS SELECT 'kept' AS note, 42 AS answer",
    )  # fmt: skip
    return home


def test_a_file_of_duckdb_2_is_converted_with_every_row_and_its_keys(old_home: DataHome) -> None:
    path = old_home.duckdb_path
    assert migration.needs_migration(path)
    with pytest.raises(duckdb.IOException, match="newer version"):
        duckdb.connect(str(path), read_only=True)
    said: list[str] = []
    backup = migration.migrate(old_home, said.append)

    assert backup == path.with_name(path.name + migration.BACKUP_SUFFIX)
    assert migration.needs_migration(backup)  # the original, untouched, beside the new file
    assert not migration.needs_migration(path)
    with duckdb.connect(str(path)) as conn:
        assert conn.execute("SELECT count(*), sum(volume) FROM ohlcv_data").fetchall() == [
            (5000, sum(1000 + i for i in range(5000)))
        ]
        actions = conn.execute(
            "SELECT kind, split_factor, amount, declaration_date FROM corporate_actions "
            "ORDER BY ex_date"
        ).fetchall()
        assert actions == [("split", 4.0, None, None), ("dividend", None, 0.25, date(2021, 6, 20))]
        assert conn.execute("SELECT note, answer FROM notes").fetchall() == [("kept", 42)]
        with pytest.raises(duckdb.ConstraintException):  # the unique key came back
            conn.execute("INSERT INTO ohlcv_data SELECT * FROM ohlcv_data LIMIT 1")
    assert old_home.version_path.exists()  # a new data version: the API drops its cache
    assert any("5,000 rows" in line for line in said)
    assert migration.migrate(old_home) is None  # nothing left to do


def test_a_failed_conversion_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    """An ``ohlcv_data`` of other columns cannot go into our schema: an error, no change."""
    home = DataHome(tmp_path / "home")
    home.root.mkdir()
    write_with_duckdb_2(home.duckdb_path, "CREATE TABLE ohlcv_data (symbol VARCHAR)",
                        "INSERT INTO ohlcv_data VALUES ('X')")  # fmt: skip
    before = fingerprint(home.duckdb_path)
    with pytest.raises(migration.MigrationError, match="left as it was"):
        migration.migrate(home)
    assert fingerprint(home.duckdb_path) == before
    assert migration.needs_migration(home.duckdb_path)
    assert sorted(p.name for p in home.root.iterdir()) == sorted([
        home.duckdb_path.name,
        home.version_path.name,  # adopted under the write lock; it names the old file
        home.writers_dir.name,
    ])  # fmt: skip


def test_files_of_our_duckdb_and_missing_files_need_nothing(tmp_path: Path) -> None:
    home = DataHome(tmp_path / "home")
    home.root.mkdir()
    assert not migration.needs_migration(home.duckdb_path)
    assert migration.migrate(home) is None
    duckdb.connect(str(home.duckdb_path)).execute(CREATE_TABLE_SQL).close()
    assert migration.migrate(home) is None
    assert not home.version_path.exists()
