"""The one place that opens the shared lake (DuckLake, PostgreSQL catalog, Parquet under
``MARKET_SHARED_HOME``), so the pipeline's writer and the API's reader cannot disagree on it
(docs/design/core-internals.md).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

import duckdb
import filelock
import psycopg
import tenacity
from psycopg import conninfo as pg_conninfo

from market_core.env import SettingsError
from market_core.home import SHARED_HOME_VAR, DataHome
from market_core.schema import CHANGES_TABLE, COMMITS_TABLE, TABLES

T = TypeVar("T")
log = logging.getLogger(__name__)

LAKE_ALIAS = "lake"
"""The name the lake is attached (and ``USE``d) under in every connection."""

POSTGRES_URL_VAR = "MARKET_POSTGRES_URL"
EXTENSIONS_FOLDER = "duckdb_extensions"
# The wheel packages holding each extension file, by the name DuckDB knows it under once installed.
_WHEELS = {"ducklake": "duckdb_extension_ducklake", "postgres_scanner": "duckdb_extension_postgres"}
INSTALL_LOCK_TIMEOUT_SECONDS = 120.0
CONFLICT_ATTEMPTS = 8
CONFLICT_FIRST_WAIT_SECONDS = 0.1
CONFLICT_MAX_WAIT_SECONDS = 5.0
CREATION_ATTEMPTS = 8
WRITE_LOCK_KEY = 0x6D61726B65745F6C  # "market_l": the lake's one advisory lock
WRITE_LOCK_TIMEOUT_SECONDS = 900
CATALOG_CONNECT_TIMEOUT_SECONDS = 10
LAKE_OPTIONS: dict[str, int] = {"parquet_row_group_size": 32_768}
"""DuckLake options the lake is kept at (``_set_lake_options``)."""

_UNIQUE = re.compile(r",\s*UNIQUE\s*\([^)]*\)")


def _without_unique(sql: str) -> str:
    """schema.py's table, minus the UNIQUE constraint DuckLake does not have: one column list."""
    stripped = _UNIQUE.sub("", sql)
    if stripped == sql:
        raise AssertionError("schema.py's CREATE TABLE lost its UNIQUE clause; update lake.py")
    return stripped


LAKE_TABLES_SQL: tuple[tuple[str, str], ...] = tuple(
    # the push stream's change log and its commits have no UNIQUE to strip
    (name, sql if name in (CHANGES_TABLE, COMMITS_TABLE) else _without_unique(sql))
    for name, sql in TABLES.items()
)


class LakeError(RuntimeError):
    """The lake could not be opened or written."""


class LakeUnavailable(LakeError):
    """The lake's catalog or extensions could not be reached or loaded."""


class LakeWriteBusy(LakeError):
    """Another writer held the lake's write lock for longer than a load waits."""


class LakeWriteConflict(LakeError):
    """A commit kept meeting other writers' commits to the same table after every retry."""


@dataclass(frozen=True)
class LakeSettings:
    """Where the lake is: its catalog (a PostgreSQL URL) and the shared folder of its files.

    ``postgres_url`` stays out of ``repr`` because it may hold a password."""

    postgres_url: str = field(repr=False)
    shared_home: str
    extension_dir: Path | None = None
    """Where the extensions are installed; ``<MARKET_DATA_HOME>/duckdb_extensions`` if None."""
    connect_timeout_seconds: int | None = None
    """libpq's ``connect_timeout`` for the catalog, unless the URL sets one; None: libpq's
    default, which waits as long as the kernel does (minutes) for a host that does not answer.
    The API's reader sets a short one, so that a miss during an outage is a prompt 503."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> LakeSettings | None:
        """The lake mode's settings, or None when ``MARKET_POSTGRES_URL`` is unset (file mode)."""
        env = os.environ if env is None else env
        url = env.get(POSTGRES_URL_VAR, "").strip()
        if not url:
            return None
        shared = env.get(SHARED_HOME_VAR, "").strip()
        if not shared:
            raise SettingsError(
                f"{POSTGRES_URL_VAR} is set but {SHARED_HOME_VAR} is not: the lake's data files "
                f"need a folder every machine sees; set {SHARED_HOME_VAR} to it"
            )
        settings = cls(postgres_url=url, shared_home=shared)
        settings.conninfo  # noqa: B018 - a malformed URL fails at start-up, not at first load
        return settings

    @property
    def conninfo(self) -> str:
        """The libpq key=value form of the URL, as the postgres extension takes it."""
        try:
            params = pg_conninfo.conninfo_to_dict(self.postgres_url)
        except Exception:  # psycopg's message would quote the URL, password and all
            raise SettingsError(
                f"{POSTGRES_URL_VAR} is not a PostgreSQL URL libpq understands "
                f"({self.redacted_url}); expected postgresql://user[:password]@host:port/database"
            ) from None
        if self.connect_timeout_seconds is not None:
            params.setdefault("connect_timeout", str(self.connect_timeout_seconds))
        return pg_conninfo.make_conninfo(
            "", **{k: str(v) for k, v in params.items() if v is not None}
        )

    @property
    def redacted_url(self) -> str:
        return self.redact(self.postgres_url)

    def redact(self, text: str) -> str:
        """``text`` with the URL's password, plain or percent-encoded, replaced by ``***``."""
        for secret in self._secrets():
            text = text.replace(secret, "***")
        return text

    def _secrets(self) -> list[str]:
        found = set(re.findall(r"://[^:/@]*:([^@]*)@", self.postgres_url))
        found |= set(re.findall(r"password=([^&\s]+)", self.postgres_url))
        try:
            password = pg_conninfo.conninfo_to_dict(self.postgres_url).get("password")
        except Exception:
            password = None
        if password:
            found |= {str(password), quote(str(password), safe="")}
        # Longest first, so a password containing another's text is replaced whole.
        return sorted((s for s in found if s), key=len, reverse=True)

    @property
    def data_path(self) -> str:
        """The lake's data folder (``<MARKET_SHARED_HOME>/lake/``), with its trailing slash."""
        if "://" in self.shared_home:
            return self.shared_home.rstrip("/") + "/lake/"
        return str(Path(self.shared_home).resolve() / "lake") + "/"

    def extensions_dir(self) -> Path:
        return self.extension_dir or DataHome.from_env().root / EXTENSIONS_FOLDER


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _wheel_file(package: str) -> Path:
    version = duckdb.__version__
    try:
        folder = resources.files(package) / "extensions" / f"v{version}"
        matches = [p for p in folder.iterdir() if p.name.endswith(".duckdb_extension")]
    except (ModuleNotFoundError, OSError):
        matches = []
    if len(matches) != 1:
        raise LakeUnavailable(
            f"the {package} wheel holds no extension for DuckDB {version}; "
            f"install {package.replace('_', '-')}=={version}"
        )
    return Path(str(matches[0]))


_installed: set[Path] = set()
_installed_guard = threading.Lock()


def install_extensions(conn: duckdb.DuckDBPyConnection, directory: Path) -> None:
    """Point ``conn`` at ``directory`` and install the wheels' extensions into it if missing.

    Under a file lock so that two processes starting at once never autoload a half-written
    file; a process remembers a folder it has seen complete."""
    conn.execute(f"SET extension_directory = {_quote(str(directory))}")
    with _installed_guard:
        if directory in _installed:
            return
        directory.mkdir(parents=True, exist_ok=True)
        try:
            with filelock.FileLock(
                directory / ".install.lock", timeout=INSTALL_LOCK_TIMEOUT_SECONDS
            ):
                present = {
                    row[0]
                    for row in conn.execute(
                        "SELECT extension_name FROM duckdb_extensions() WHERE installed"
                    ).fetchall()
                }
                for name, package in _WHEELS.items():
                    if name not in present:
                        conn.execute(f"INSTALL {_quote(str(_wheel_file(package)))}")
        except filelock.Timeout:
            raise LakeUnavailable(
                f"another process held {directory / '.install.lock'} for over "
                f"{INSTALL_LOCK_TIMEOUT_SECONDS:.0f} s; remove it if no process is installing"
            ) from None
        except duckdb.Error as exc:
            raise LakeUnavailable(f"cannot install the lake's DuckDB extensions: {exc}") from exc
        _installed.add(directory)


def rollback(conn: duckdb.DuckDBPyConnection) -> None:
    """Roll back the open transaction, if any: a commit that failed has already ended it."""
    with contextlib.suppress(duckdb.TransactionException):
        conn.rollback()


def is_conflict(exc: BaseException) -> bool:
    """A DuckLake commit that lost to another writer's commit to the same table."""
    return isinstance(exc, duckdb.TransactionException) and "conflict" in str(exc).lower()


def with_conflict_retry(work: Callable[[], T], *, attempts: int = CONFLICT_ATTEMPTS) -> T:
    """``work()`` (one whole transaction, which must roll itself back on error), run again with
    jittered exponential backoff while it meets a write conflict, at most ``attempts`` times."""
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(is_conflict),
        stop=tenacity.stop_after_attempt(attempts),
        wait=tenacity.wait_exponential_jitter(
            initial=CONFLICT_FIRST_WAIT_SECONDS, max=CONFLICT_MAX_WAIT_SECONDS
        ),
        before_sleep=tenacity.before_sleep_log(log, logging.INFO),
        reraise=True,
    )
    try:
        return retrying(work)
    except duckdb.TransactionException as exc:
        if not is_conflict(exc):
            raise
        raise LakeWriteConflict(
            f"a lake commit met other writers' commits {attempts} times in a row: {exc}; "
            "run fewer writers at once (the run queue's pool keeps one)"
        ) from exc


@contextlib.contextmanager
def write_lock(
    settings: LakeSettings, *, timeout_seconds: float = WRITE_LOCK_TIMEOUT_SECONDS
) -> Iterator[None]:
    """One writer at a time, across machines: a session advisory lock in the catalog's
    database, held for the block. DuckLake alone would let two loads that each found a symbol
    new both insert its bars (inserts never conflict), storing them twice. A writer that dies
    drops its connection, and PostgreSQL releases the lock with it."""
    conn: psycopg.Connection[tuple[object, ...]] | None = None
    try:
        conn = psycopg.connect(
            settings.conninfo, autocommit=True, connect_timeout=CATALOG_CONNECT_TIMEOUT_SECONDS
        )
    except psycopg.Error as exc:
        reason = settings.redact(str(exc))  # raised below, outside the handler: no __context__
    if conn is None:
        where = settings.redacted_url
        raise LakeUnavailable(f"cannot reach the lake's catalog at {where}: {reason}")
    try:
        conn.execute(f"SET lock_timeout = {int(timeout_seconds * 1000)}")
        try:
            conn.execute("SELECT pg_advisory_lock(%s)", [WRITE_LOCK_KEY])
        except psycopg.errors.LockNotAvailable:
            raise LakeWriteBusy(
                f"another writer held the lake's write lock for over {timeout_seconds:.0f} s; "
                "see which run loads now (pg_locks in the catalog's database names its pid)"
            ) from None
        yield
    finally:
        conn.close()


def catalog_reachable(settings: LakeSettings) -> bool:
    """Whether the catalog's PostgreSQL takes a connection and answers now: a reader asks after
    a failed read, to tell a lost catalog from a failure of its own."""
    try:
        with psycopg.connect(
            settings.conninfo, autocommit=True, connect_timeout=CATALOG_CONNECT_TIMEOUT_SECONDS
        ) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


def _lost_creation_race(reason: str) -> bool:
    """Another process created the fresh catalog while this one tried to: it is there now."""
    return "initialize DuckLake" in reason and "already exists" in reason


def _attach(
    conn: duckdb.DuckDBPyConnection, settings: LakeSettings, *, read_only: bool, use: bool = True
) -> None:
    """Attach and (with ``use``) ``USE`` the lake. The first attach of a fresh catalog creates
    it; several processes doing that at once (a cluster starting) all but one fail, and try
    again."""
    options = f"DATA_PATH {_quote(settings.data_path)}" + (", READ_ONLY" if read_only else "")
    target = _quote(f"ducklake:postgres:{settings.conninfo}")
    for attempt in range(CREATION_ATTEMPTS):
        try:
            conn.execute(f"ATTACH {target} AS {LAKE_ALIAS} ({options})")
        except duckdb.Error as exc:
            # DuckDB quotes the connection string, password and all: keep only a redacted copy,
            # raised outside the handler so that not even __context__ holds the original.
            reason = settings.redact(str(exc))
        else:
            if use:
                conn.execute(f"USE {LAKE_ALIAS}")
            return
        if not _lost_creation_race(reason):
            break
        time.sleep(min(CONFLICT_MAX_WAIT_SECONDS, CONFLICT_FIRST_WAIT_SECONDS * 2**attempt))
    raise LakeUnavailable(
        f"cannot open the lake at {settings.redacted_url} (data in {settings.data_path}): {reason}"
    )


def _detach(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute("USE memory")
    conn.execute(f"DETACH {LAKE_ALIAS}")


def _missing_tables(conn: duckdb.DuckDBPyConnection) -> list[str]:
    present = {
        row[0]
        for row in conn.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = ?", [LAKE_ALIAS]
        ).fetchall()
    }
    return [name for name, _ in LAKE_TABLES_SQL if name not in present]


def _create_tables(conn: duckdb.DuckDBPyConnection) -> None:
    """Every table in one transaction; a writer creating them at the same time is a conflict,
    and the retry then finds them there."""

    def create() -> None:
        conn.begin()
        try:
            for _, sql in LAKE_TABLES_SQL:
                conn.execute(sql)
            conn.commit()
        except BaseException:
            rollback(conn)
            raise

    with_conflict_retry(create)


def _attach_read_only(conn: duckdb.DuckDBPyConnection, settings: LakeSettings) -> None:
    """A reader that comes before any writer finds no lake, or a lake without the tables: it
    creates them once through a read-write attach, so that readers never see a missing table."""
    try:
        _attach(conn, settings, read_only=True)
        if not _missing_tables(conn):
            return
        _detach(conn)
    except LakeUnavailable:
        pass  # the catalog holds no lake yet (or is down: the read-write attach says which)
    _attach(conn, settings, read_only=False)
    try:
        _create_tables(conn)
    finally:
        _detach(conn)
    _attach(conn, settings, read_only=True)


def connect(settings: LakeSettings, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the lake attached as ``LAKE_ALIAS`` and ``USE``d,
    its tables there (created by the first connection ever, read-only or not)."""
    conn = duckdb.connect()
    try:
        install_extensions(conn, settings.extensions_dir())
        if "://" not in settings.data_path:
            with contextlib.suppress(OSError):  # a read-only mount: DuckLake says what is wrong
                Path(settings.data_path).mkdir(parents=True, exist_ok=True)
        if read_only:
            _cache_immutable_files(conn)
            _attach_read_only(conn, settings)
        else:
            _attach(conn, settings, read_only=False)
            if _missing_tables(conn):
                _create_tables(conn)
            _set_lake_options(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def attach_read_only(conn: duckdb.DuckDBPyConnection, settings: LakeSettings) -> None:
    """Attach the lake read-only to ``conn`` as ``LAKE_ALIAS``, leaving ``conn``'s own database
    the default: an API replica's local copy (a DuckDB file) reads the lake's changes through
    it. The lake and its tables must exist (``connect`` makes them)."""
    install_extensions(conn, settings.extensions_dir())
    _cache_immutable_files(conn)
    _attach(conn, settings, read_only=True, use=False)


def _cache_immutable_files(conn: duckdb.DuckDBPyConnection) -> None:
    """A reader keeps the Parquet footers and blocks it read, and never checks them again: a
    lake's data files are written once under a new name and never changed, so a cached copy
    cannot go stale. Saves a footer parse and a ``stat`` per file on every query."""
    conn.execute("SET GLOBAL parquet_metadata_cache = true")
    conn.execute("SET GLOBAL validate_external_file_cache = 'NO_VALIDATION'")


def _set_lake_options(conn: duckdb.DuckDBPyConnection) -> None:
    """Options every writer's files follow, kept in the catalog (so they hold for every
    machine and for the maintenance job's merged files); set by any writer that finds them
    missing, so a lake made by an older version gets them too.

    Row groups of 32,768 rows instead of DuckDB's 122,880: a question is one symbol's range,
    and the bars are clustered by symbol (each load is a batch of symbols), so a read decodes
    one or two row groups; a quarter of the size halved a one-year miss (benchmark 7)."""
    current = dict(
        conn.execute(
            "SELECT option_name, value FROM ducklake_options(?) WHERE scope = 'GLOBAL'",
            [LAKE_ALIAS],
        ).fetchall()
    )
    for name, value in LAKE_OPTIONS.items():
        if current.get(name) != str(value):
            conn.execute(f"CALL {LAKE_ALIAS}.set_option(?, ?)", [name, value])


def snapshot_id(conn: duckdb.DuckDBPyConnection) -> int:
    """The lake's current snapshot id: it grows with every commit that changed something."""
    row = conn.execute(f"SELECT id FROM ducklake_current_snapshot('{LAKE_ALIAS}')").fetchone()
    if row is None:  # pragma: no cover - a lake always has its creation snapshot
        raise LakeError("the lake has no snapshot")
    return int(row[0])
