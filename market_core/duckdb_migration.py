"""Converting a data home's DuckDB file written by DuckDB 2.0 to the pinned 1.5.5 format, once,
losing nothing (docs/design/core-internals.md).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import duckdb

from market_core.handoff import exclusive_write
from market_core.home import DataHome
from market_core.schema import ACTIONS_TABLE, CREATE_ACTIONS_SQL, CREATE_TABLE_SQL, TABLE

REPO = Path(__file__).resolve().parents[1]
REQUIREMENTS = REPO / "requirements" / "migrate.txt"
OLD_DUCKDB_VENV = REPO / ".venv-duckdb2"
"""Made by ``make setup``: DuckDB 2.0.0 alone, to read files it wrote."""
NEWER_FORMAT = "newer version of DuckDB"
"""What DuckDB says when it opens a file of a later storage format."""
BACKUP_SUFFIX = ".duckdb-2.0.bak"
SCHEMAS = {TABLE: CREATE_TABLE_SQL, ACTIONS_TABLE: CREATE_ACTIONS_SQL}

# Run by DuckDB 2.0.0's Python: each table of the file to <out>/<table>.parquet, counts to stdout.
_EXPORT = """
import sys, duckdb
source, out = sys.argv[1], sys.argv[2]
conn = duckdb.connect(source, read_only=True)
conn.execute("SET enable_progress_bar = false")  # stdout carries the counts
tables = [r[0] for r in conn.execute(
    "SELECT table_name FROM information_schema.tables "
    "WHERE table_schema = 'main' AND table_type = 'BASE TABLE'").fetchall()]
for table in tables:
    conn.execute(f"COPY \\"{table}\\" TO '{out}/{table}.parquet' (FORMAT parquet)")
    rows = conn.execute(f'SELECT count(*) FROM "{table}"').fetchall()[0][0]
    print(f"{table}\\t{rows}")
"""


class MigrationError(RuntimeError):
    """The file could not be converted; it is left as it was."""


def needs_migration(path: Path) -> bool:
    """Whether ``path`` is a DuckDB file of a later storage format than ours."""
    if not path.exists():
        return False
    try:
        duckdb.connect(str(path), read_only=True).close()
    except duckdb.IOException as exc:
        return NEWER_FORMAT in str(exc)
    return False


def migrate(home: DataHome, say: Callable[[str], None] = print) -> Path | None:
    """Convert ``home``'s DuckDB file if it needs it; the backup's path, or None if it did not."""
    path = home.duckdb_path
    if not needs_migration(path):
        return None
    say(f"{path} was written by DuckDB 2.0, which this version cannot read; converting it "
        f"(the original is kept as {path.name}{BACKUP_SUFFIX})")  # fmt: skip
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="duckdb-migration-", dir=home.root))
    try:
        with exclusive_write(home) as handoff:
            if not needs_migration(path):  # another process converted it while we waited
                return None
            counts = _export(path, work)
            fresh = work / path.name
            _import(fresh, work, counts)
            backup = path.with_name(path.name + BACKUP_SUFFIX)
            wal = path.with_name(path.name + ".wal")
            if wal.exists():
                os.replace(wal, backup.with_name(backup.name + ".wal"))
            os.replace(path, backup)
            os.replace(fresh, path)
            _fsync_dir(path.parent)
            handoff.finish(changed=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    tables = ", ".join(f"{table} {rows:,} rows" for table, rows in counts.items())
    say(f"converted in {time.monotonic() - started:.1f} s: {tables}; original kept at {backup}")
    return backup


def _export(path: Path, work: Path) -> dict[str, int]:
    """Each table of ``path`` as Parquet in ``work``, through DuckDB 2.0.0 in its own venv."""
    venv = OLD_DUCKDB_VENV if (OLD_DUCKDB_VENV / "bin" / "python").exists() else work / "venv"
    python = venv / "bin" / "python"
    steps = [] if venv == OLD_DUCKDB_VENV else install_steps(venv)
    steps.append([str(python), "-c", _EXPORT, str(path), str(work)])
    result = None
    for step in steps:
        result = subprocess.run(step, capture_output=True, text=True, timeout=3600)
        if result.returncode != 0:
            raise MigrationError(
                f"converting {path} failed at `{' '.join(step[:4])} ...`; the file is left as "
                f"it was:\n{result.stderr.strip()[-2000:]}"
            )
    assert result is not None
    counts: dict[str, int] = {}
    for line in result.stdout.splitlines():
        table, rows = line.split("\t")
        counts[table] = int(rows)
    return counts


def install_steps(venv: Path) -> list[list[str]]:
    """The commands that make a venv holding DuckDB 2.0.0 alone (``make setup`` runs them)."""
    if not REQUIREMENTS.exists():
        raise MigrationError(f"{REQUIREMENTS} is missing: run this from the project's checkout")
    python = venv / "bin" / "python"
    return [
        [sys.executable, "-m", "venv", "--without-pip", str(venv)],
        [sys.executable, "-m", "uv", "pip", "install", "-q", "--python", str(python),
         "--require-hashes", "-r", str(REQUIREMENTS)],
    ]  # fmt: skip


def _import(fresh: Path, work: Path, counts: dict[str, int]) -> None:
    """A new file with our schema holding every exported row; raises if a count differs."""
    try:
        _load(fresh, work, counts)
    except duckdb.Error as exc:
        raise MigrationError(f"{exc}; the file is left as it was") from exc


def _load(fresh: Path, work: Path, counts: dict[str, int]) -> None:
    with duckdb.connect(str(fresh)) as conn:
        conn.execute("SET enable_progress_bar = false")
        for table in counts:
            parquet = str(work / f"{table}.parquet")
            if table in SCHEMAS:
                conn.execute(SCHEMAS[table])
                conn.execute(f"INSERT INTO {table} SELECT * FROM read_parquet(?)", [parquet])
            else:  # a table of the user's own: its rows and column types, as they were
                conn.execute(f'CREATE TABLE "{table}" AS SELECT * FROM read_parquet(?)', [parquet])
            rows = conn.execute(f'SELECT count(*) FROM "{table}"').fetchall()[0][0]
            if rows != counts[table]:
                raise MigrationError(
                    f"{table}: {counts[table]} rows exported, {rows} imported; the file is "
                    f"left as it was"
                )
        conn.execute("CHECKPOINT")


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        if args == ["--install"]:  # make setup: the venv that reads DuckDB 2.0 files
            for step in install_steps(OLD_DUCKDB_VENV):
                subprocess.run(step, check=True, timeout=3600)
            return 0
        migrate(DataHome.from_env())
    except MigrationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
