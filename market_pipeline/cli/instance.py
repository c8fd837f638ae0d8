"""Writes the Dagster instance config of a data home (``$DAGSTER_HOME/dagster.yaml``).

Run by ``make`` before anything starts Dagster. The instance keeps its runs, event log, schedule
and sensor state and compute logs under the data home, lets at most four runs proceed at once,
and gives the ``alpha_vantage`` pool (every step that calls the API or writes DuckDB) one slot at
run granularity: a second backfill, the daily update or a sensor's run waits in the queue instead
of fighting over the key's quota or the DuckDB file. Runs log to their console from INFO up (the
event log keeps every event). A file edited by its user is left alone.

With ``MARKET_POSTGRES_URL`` set, the runs, event log and schedules live in that database
(dagster-postgres) so that every machine sees one instance, and with ``MARKET_SHARED_HOME`` set
too, the compute logs and the artifact folder move there: a Celery worker runs a step with the
launching machine's instance (dagster-celery hands it over whole), so any folder it names must
exist on every machine. The file names the database by its parts and never holds a password:
libpq (psycopg2) takes one from ``PGPASSWORD`` or ``~/.pgpass``, and ``open_instance`` exports
the URL's own to ``PGPASSWORD`` for this process and the ones it starts. The driver is named
(``postgresql+psycopg2``) because SQLAlchemy 2.1 otherwise picks psycopg 3, whose connections
the webserver's statement-timeout hook closes. Our file carries a marker; one written for the
other mode (or another database) is rewritten, an edited one only warned about.

In the embedded mode the event log is Dagster's SQLite one, same files and schema, through
``HeldSqliteEventLogStorage`` (``market_pipeline/defs/event_log.py``), which keeps its writes'
connections open: an event costs a sixth of the CPU (9 -> 1.5 ms), a materialization a tenth
(0.8 ms). Its block names the home's ``history/runs`` folder by its absolute path (Dagster's own
config has no other way), so the file carries a marker with a digest, and ours is rewritten when
the home moves or this module writes more; the file earlier versions wrote (``DAGSTER_YAML``)
counts as ours and gets the block.

Dagster creates (and migrates) its storage when an instance is first opened, without any guard
against a second process doing the same at the same moment: one of two ``make ingest`` started
together on a fresh data home died on ``table ... already exists``. Every opening here therefore
holds a file lock beside ``dagster.yaml`` and, in Postgres mode, an advisory lock in the database
(the file lock only covers one machine), so the first process creates the storage and the others
open what it made. ``make run`` and ``make dagster`` open the instance this way before
``dagster dev`` starts, so its webserver, daemon and code servers only ever find it made.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import re
import sys
import time
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import yaml
from dagster import DagsterInstance
from filelock import FileLock, Timeout
from psycopg import conninfo as pg_conninfo

from market_core.atomic import write_text_atomic
from market_core.env import SettingsError
from market_core.home import DataHome, shared_from_env
from market_core.lake import POSTGRES_URL_VAR
from market_pipeline.defs.outcomes import ALPHA_VANTAGE_POOL
from market_pipeline.source.rate_limit import postgres_url_from_env

SETTINGS_YAML = """\
concurrency:
  runs:
    max_concurrent_runs: 4
  pools:
    default_limit: 1
    granularity: run
run_monitoring:
  enabled: true
  max_resume_run_attempts: 0
telemetry:
  enabled: false
"""
DAGSTER_YAML = (
    "# Written by market_pipeline/instance.py on first use; edit freely, it is not overwritten.\n"
    + SETTINGS_YAML
)
"""The embedded mode's file before its event log storage was named (issue 20), byte for byte what
every earlier version wrote; still ours, so it is replaced."""
RUN_LOGS_YAML = """\
python_logs:
  python_log_level: INFO
"""
"""A run's console log (and so its captured output) from INFO up: without it Dagster prints a
DEBUG line for every event, five a symbol on a first load (~0.15 ms of CPU each, issue 20). The
event log still gets every event whatever the level; only a run's own DEBUG messages
(``context.log.debug``, none here) are dropped. A run's config can ask for DEBUG again
(``loggers: console: config: log_level: DEBUG``)."""
EMBEDDED_MARKER = "# Written by market_pipeline/instance.py for this data home"
EMBEDDED_NOTE = "# Rewritten when the data home moves or the mode changes, unless edited.\n"
EVENT_LOG_STORAGE = {
    "module": "market_pipeline.defs.event_log",
    "class": "HeldSqliteEventLogStorage",
}
POSTGRES_MARKER = "# Written by market_pipeline/instance.py for MARKET_POSTGRES_URL"
POSTGRES_NOTE = (
    "# Rewritten when the mode or the database changes, unless edited. No password here: libpq\n"
    "# reads PGPASSWORD (exported from the URL by our commands) or ~/.pgpass.\n"
)
_MARKER_LINE = re.compile(
    f"(?:{re.escape(EMBEDDED_MARKER)}|{re.escape(POSTGRES_MARKER)})" + r" \(digest ([0-9a-f]{16})\)"
)
LOCK_NAME = "dagster.yaml.lock"
LOCK_TIMEOUT_SECONDS = 120.0
ADVISORY_LOCK_KEY = zlib.crc32(b"market_pipeline.cli.instance") & 0x7FFFFFFF
ADVISORY_POLL_SECONDS = 0.1
CONNECT_TIMEOUT_SECONDS = 10


class InstanceBusyError(TimeoutError):
    """Another process kept the instance's lock for longer than a creation or migration takes."""


class InstanceDatabaseError(RuntimeError):
    """The instance's PostgreSQL (``MARKET_POSTGRES_URL``) could not be reached."""


class InstanceConfigWarning(UserWarning):
    """``dagster.yaml`` was edited by hand and does not match the mode the environment asks for."""


@dataclass(frozen=True)
class InstanceMode:
    """Where the instance stores its state: the environment's choice, read once."""

    postgres_url: str | None = field(default=None, repr=False)
    shared: Path | None = None

    @classmethod
    def from_env(cls) -> InstanceMode:
        url = postgres_url_from_env()
        return cls(url, shared_from_env() if url else None)

    def password(self) -> str | None:
        return _url_parts(self.postgres_url).get("password") if self.postgres_url else None


def _url_parts(url: str) -> dict[str, Any]:
    try:
        return pg_conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:  # its message quotes the URL, password and all
        raise SettingsError(
            f"{POSTGRES_URL_VAR} is not a PostgreSQL URL libpq understands; expected "
            "postgresql://user[:password]@host:port/database"
        ) from None


def postgres_db_config(url: str) -> dict[str, Any]:
    """dagster-postgres' ``postgres_db`` block for ``url``, without its password."""
    parts = _url_parts(url)
    parts.pop("password", None)
    config: dict[str, Any] = {
        "username": parts.pop("user", None) or getpass.getuser(),
        "hostname": parts.pop("host", None) or "127.0.0.1",
        "port": int(parts.pop("port", None) or 5432),
        "db_name": parts.pop("dbname", None) or "postgres",
        "scheme": "postgresql+psycopg2",
    }
    if parts:
        config["params"] = {key: str(value) for key, value in sorted(parts.items())}
    return config


def _digest(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def instance_yaml(mode: InstanceMode, home: Path) -> str:
    """The file ``mode`` asks for, for the Dagster home ``home`` (an absolute path)."""
    if mode.postgres_url is None:
        events = {**EVENT_LOG_STORAGE, "config": {"base_dir": str(home / "history" / "runs")}}
        embedded = (
            EMBEDDED_NOTE
            + SETTINGS_YAML
            + RUN_LOGS_YAML
            + yaml.safe_dump({"event_log_storage": events}, sort_keys=False)
        )
        return f"{EMBEDDED_MARKER} (digest {_digest(embedded)})\n{embedded}"
    blocks: dict[str, Any] = {
        "storage": {"postgres": {"postgres_db": postgres_db_config(mode.postgres_url)}}
    }
    if mode.shared is not None:
        dagster = mode.shared / "dagster"
        blocks["local_artifact_storage"] = {
            "module": "dagster._core.storage.root",
            "class": "LocalArtifactStorage",
            "config": {"base_dir": str(dagster / "storage")},
        }
        blocks["compute_logs"] = {
            "module": "dagster._core.storage.local_compute_log_manager",
            "class": "LocalComputeLogManager",
            "config": {"base_dir": str(dagster / "logs")},
        }
    body = POSTGRES_NOTE + SETTINGS_YAML + RUN_LOGS_YAML + yaml.safe_dump(blocks, sort_keys=False)
    return f"{POSTGRES_MARKER} (digest {_digest(body)})\n{body}"


def is_ours(text: str) -> bool:
    """Written by this module and not edited since: safe to replace."""
    if text == DAGSTER_YAML:
        return True
    first, _, body = text.partition("\n")
    match = _MARKER_LINE.fullmatch(first)
    return match is not None and match.group(1) == _digest(body)


def uses_postgres(text: str) -> bool:
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError:
        return False
    if not isinstance(config, dict):
        return False
    storage = config.get("storage")
    if isinstance(storage, dict) and "postgres" in storage:
        return True
    modules = (config.get(key) for key in ("run_storage", "event_log_storage", "schedule_storage"))
    return any(
        isinstance(m, dict) and str(m.get("module", "")).startswith("dagster_postgres")
        for m in modules
    )


def dagster_home() -> Path:
    explicit = os.environ.get("DAGSTER_HOME")
    return Path(explicit) if explicit else DataHome.from_env().dagster_home


def ensure_instance(home: Path, mode: InstanceMode | None = None) -> Path:
    """``home/dagster.yaml`` as ``mode`` (the environment's by default) asks, unless edited.

    An edited file is the user's: it is kept, with a warning when it stores runs somewhere other
    than the mode asks (SQLite while ``MARKET_POSTGRES_URL`` is set, or the reverse).
    """
    mode = InstanceMode.from_env() if mode is None else mode
    home.mkdir(parents=True, exist_ok=True)
    home = home.resolve()
    config = home / "dagster.yaml"
    wanted = instance_yaml(mode, home)
    current = config.read_text() if config.exists() else None
    if current == wanted:
        return config
    if current is None or is_ours(current):
        write_text_atomic(config, wanted)
    elif uses_postgres(current) != (mode.postgres_url is not None):
        asked = (
            f"{POSTGRES_URL_VAR} is set" if mode.postgres_url else f"{POSTGRES_URL_VAR} is unset"
        )
        kept = "PostgreSQL" if uses_postgres(current) else "SQLite under the Dagster home"
        warnings.warn(
            InstanceConfigWarning(
                f"{config} was edited by hand and stores runs in {kept} although {asked}; it is "
                "left as it is: fix its storage block, or delete the file to have it written anew"
            ),
            stacklevel=2,
        )
    return config


def ensure_pool_limit(instance: DagsterInstance) -> None:
    """Create the pool's limit (``default_limit``) now instead of at its first dequeue.

    The run queue only learns of a pool's limit in the pass after it first saw the pool, so on a
    fresh instance every run queued before that first pass would start at once. A limit already
    stored (perhaps set in the UI) is left alone.
    """
    storage = instance.event_log_storage
    if ALPHA_VANTAGE_POOL not in storage.get_concurrency_keys():
        storage.initialize_concurrency_limit_to_default(ALPHA_VANTAGE_POOL)


@contextmanager
def _advisory_lock(url: str, deadline: float) -> Iterator[None]:
    """The cluster-wide side of ``instance_lock``: a session lock in the instance's database.

    The server drops it with the session, so a machine that dies holding it frees it too.
    """
    where = _where(url)
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS)
    except psycopg.OperationalError as exc:
        raise InstanceDatabaseError(
            f"cannot reach the Dagster instance's PostgreSQL at {where} ({POSTGRES_URL_VAR}): "
            f"{_redacted(str(exc), url)}; start it or fix the variable"
        ) from None
    with conn:
        while not conn.execute("SELECT pg_try_advisory_lock(%s)", (ADVISORY_LOCK_KEY,)).fetchone()[
            0
        ]:  # type: ignore[index]
            if time.monotonic() >= deadline:
                raise InstanceBusyError(
                    f"another machine has been creating or migrating the Dagster instance in "
                    f"PostgreSQL at {where} for too long (it holds advisory lock "
                    f"{ADVISORY_LOCK_KEY}); let it finish or stop it, then try again"
                )
            time.sleep(ADVISORY_POLL_SECONDS)
        yield  # closing the session releases the lock


def _try_advisory_lock(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT pg_try_advisory_lock(%s)", (ADVISORY_LOCK_KEY,)).fetchone()
    return bool(row and row[0])


def _where(url: str) -> str:
    parts = _url_parts(url)
    return f"{parts.get('host', 'localhost')}:{parts.get('port', 5432)}/{parts.get('dbname', '')}"


def _redacted(text: str, url: str) -> str:
    password = _url_parts(url).get("password")
    return text.replace(str(password), "***") if password else text


@contextmanager
def instance_lock(home: Path, timeout: float = LOCK_TIMEOUT_SECONDS) -> Iterator[None]:
    """Held while an instance is opened or symbols are registered: one process at a time.

    Creating, migrating and seeding the storage, and adding partitions (a read, then an insert)
    are each one process's job.

    The lock is an ``flock`` on a file beside ``dagster.yaml``: the kernel releases it when its
    holder dies, so a killed process never leaves the data home locked. With the instance in
    PostgreSQL, an advisory lock there makes it one process across all machines.
    """
    deadline = time.monotonic() + timeout
    home.mkdir(parents=True, exist_ok=True)
    lock = FileLock(home / LOCK_NAME)
    try:
        lock.acquire(timeout=timeout)
    except Timeout as exc:
        raise InstanceBusyError(
            f"another process has been creating or migrating the Dagster instance in {home} for "
            f"more than {timeout:.0f} s (it holds {home / LOCK_NAME}); let it finish or stop it, "
            "then try again"
        ) from exc
    try:
        url = InstanceMode.from_env().postgres_url
        if url is None:
            yield
        else:
            with _advisory_lock(url, deadline):
                yield
    finally:
        lock.release()


@contextmanager
def _dagster_home_env(home: Path) -> Iterator[None]:
    """``DagsterInstance.get()``, Dagster's public way in, reads the folder from the environment."""
    before = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(home)
    try:
        yield
    finally:
        if before is None:
            del os.environ["DAGSTER_HOME"]
        else:
            os.environ["DAGSTER_HOME"] = before


def export_password(mode: InstanceMode) -> None:
    """``PGPASSWORD`` from the URL, for libpq, unless the environment already names one.

    Set in this process's environment, so that the processes it starts (``dagster dev``, a
    Celery worker) open the instance the same way.
    """
    password = mode.password()
    if password is not None and not os.environ.get("PGPASSWORD"):
        os.environ["PGPASSWORD"] = password


def open_instance(lock_timeout: float = LOCK_TIMEOUT_SECONDS) -> DagsterInstance:
    """The data home's instance, whether or not ``DAGSTER_HOME`` is set; safe to race."""
    home = dagster_home().resolve()
    mode = InstanceMode.from_env()
    export_password(mode)
    with instance_lock(home, lock_timeout):
        ensure_instance(home, mode)
        with _dagster_home_env(home):
            instance = DagsterInstance.get()
        try:
            ensure_pool_limit(instance)
        except BaseException:
            instance.dispose()
            raise
    return instance


def main() -> int:
    with open_instance() as instance:
        storage = type(instance.run_storage).__name__
    config = dagster_home().resolve() / "dagster.yaml"
    print(f"Dagster instance: {config} (runs in {storage})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
