"""A real PostgreSQL and a real Redis on loopback, each in a folder of its own.

One starter for the ``cluster`` tests and ``make cluster``; every wait is bounded and a failure
names its cause (the log's tail, or the Debian packages to install). Running as root, PostgreSQL
runs as another user: see docs/design/operations-internals.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

INSTALL_HINT = "install them with `apt-get install postgresql redis-server` (Debian/Ubuntu)"
POSTGRES_SEARCH = ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin", "/usr/local/pgsql/bin")
POSTGRES_SUPERUSER = "market"
POSTGRES_DATABASE = "market"
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 10.0
PORT_ATTEMPTS = 3
LOG_TAIL_LINES = 40
# Durability a throwaway test server does without: a crash of the machine loses it anyway.
FAST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


class ServiceError(RuntimeError):
    """PostgreSQL or Redis could not be found, started or stopped."""


class ServiceNotInstalled(ServiceError):
    """A server binary is not on this machine."""


class ServiceStartError(ServiceError):
    """A server was found but did not come up in time."""


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _choose_port(requested: int | None, previous: int | None, attempt: int) -> int:
    """The requested port, else the previous one while it is free, else any free one."""
    if requested:
        return requested
    if attempt == 0 and previous and port_free(previous):
        return previous
    return free_port()


def free_port() -> int:
    """A port nobody listens on right now; a race with another process is retried by callers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def log_tail(path: Path, lines: int = LOG_TAIL_LINES, since: int = 0) -> str:
    """The last ``lines`` of a log, from byte ``since`` on (what one start wrote)."""
    try:
        with path.open("rb") as log:
            log.seek(since)
            text = log.read().decode(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:]) or f"(empty log at {path})"


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", str(path))) or (0,)


def find_postgres_bindir() -> Path:
    """The folder of ``initdb``, ``pg_ctl`` and ``postgres``: from PATH, else the newest install.

    Debian keeps them out of PATH (``/usr/lib/postgresql/<major>/bin``); a symlink on PATH is
    followed to the real folder so that the three programs come from one version."""
    on_path = shutil.which("pg_ctl")
    candidates = [Path(on_path).resolve().parent] if on_path else []
    for pattern in POSTGRES_SEARCH:
        root = Path("/")
        candidates += sorted(root.glob(pattern.lstrip("/")), key=_version_key, reverse=True)
    for folder in candidates:
        if all((folder / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return folder
    raise ServiceNotInstalled(
        f"PostgreSQL's initdb/pg_ctl/postgres were not found on PATH nor in "
        f"{', '.join(POSTGRES_SEARCH)}; {INSTALL_HINT}"
    )


def find_redis_server() -> Path:
    found = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/sbin:/usr/bin")
    if found is None:
        raise ServiceNotInstalled(f"redis-server was not found on PATH; {INSTALL_HINT}")
    return Path(found)


@dataclass(frozen=True)
class RunAs:
    """The unprivileged account a server runs as when this process is root (else ``None``)."""

    name: str
    uid: int
    gid: int

    @classmethod
    def for_postgres(cls) -> RunAs | None:
        if os.geteuid() != 0:
            return None
        for name in ("postgres", "nobody"):
            with contextlib.suppress(KeyError):
                entry = pwd.getpwnam(name)
                return cls(name, entry.pw_uid, entry.pw_gid)
        raise ServiceStartError("running as root, and neither a `postgres` nor a `nobody` user")

    def blocked_by(self, folder: Path) -> Path | None:
        """The first parent of ``folder`` this account may not enter, if any."""
        for parent in folder.resolve().parents:
            if not parent.exists():
                continue  # made later, by us, with the usual mode
            status = parent.stat()
            if not status.st_mode & 0o001 and status.st_uid != self.uid:
                return parent
        return None

    def hand_over(self, root: Path) -> None:
        """Give ``root`` and everything in it to this account, and check it can reach it."""
        for path in (root, *root.rglob("*")):
            os.lchown(path, self.uid, self.gid)
        blocked = self.blocked_by(root)
        if blocked is not None:
            raise ServiceStartError(
                f"PostgreSQL runs as `{self.name}` (it refuses root), which cannot enter "
                f"{blocked}; put its folder below a directory others may enter (e.g. /tmp)"
            )


def reachable_postgres_folder(wanted: Path) -> Path:
    """``wanted``, or a link there to a folder the server's account can reach.

    As root, PostgreSQL runs as another user, which cannot enter a folder below a private one (a
    checkout in ``/root``): its files then live in ``/var/tmp/market-postgres-<hash>`` and
    ``wanted`` links to it, so the same folder is found again at the next start."""
    run_as = RunAs.for_postgres()
    if wanted.is_symlink() or run_as is None or run_as.blocked_by(wanted) is None:
        return wanted
    if wanted.is_dir() and any(wanted.iterdir()):
        return wanted  # someone's files: starting there says what is wrong
    digest = hashlib.sha256(str(wanted.resolve()).encode()).hexdigest()[:12]
    elsewhere = Path("/var/tmp") / f"market-postgres-{digest}"
    elsewhere.mkdir(mode=0o700, exist_ok=True)
    wanted.parent.mkdir(parents=True, exist_ok=True)
    if wanted.is_dir():
        wanted.rmdir()
    wanted.symlink_to(elsewhere, target_is_directory=True)
    return wanted


def _run(
    command: Sequence[str], run_as: RunAs | None, cwd: Path, timeout: float
) -> subprocess.CompletedProcess[str]:
    """One command, as ``run_as`` when given, bounded in time; output captured for errors."""
    try:
        return subprocess.run(
            list(command),
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={**os.environ, "LC_ALL": "C"},
            user=run_as.uid if run_as else None,
            group=run_as.gid if run_as else None,
            extra_groups=[] if run_as else None,
        )
    except subprocess.TimeoutExpired as exc:
        raise ServiceStartError(f"{command[0]} did not finish in {timeout:.0f} s") from exc


@dataclass
class PostgresServer:
    """A running PostgreSQL cluster in ``root`` (data in ``root/data``, socket and log beside)."""

    root: Path
    port: int
    bindir: Path
    run_as: RunAs | None
    user: str = POSTGRES_SUPERUSER

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "postgres.log"

    @property
    def socket_path(self) -> Path:
        return self.root / f".s.PGSQL.{self.port}"

    def database_url(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    @property
    def url(self) -> str:
        """The ``market`` database: the value for ``MARKET_POSTGRES_URL``."""
        return self.database_url(POSTGRES_DATABASE)

    def _admin(self) -> psycopg.Connection[tuple[object, ...]]:
        """The maintenance database, outside any transaction (``CREATE DATABASE`` needs that)."""
        return psycopg.connect(self.database_url("postgres"), autocommit=True, connect_timeout=10)

    def create_database(self, name: str) -> str:
        """A new, empty database (nothing shared with any other); its URL."""
        with self._admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.database_url(name)

    def ensure_database(self, name: str) -> None:
        with self._admin() as conn:
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if found is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def _pg_ctl(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), *args]
        return _run(command, self.run_as, self.root, timeout)

    def stop(self) -> None:
        """Fast shutdown (open sessions are ended); a server that will not stop is killed."""
        if not (self.data_dir / "postmaster.pid").exists():
            return
        timeout = f"{STOP_TIMEOUT_SECONDS:.0f}"
        with contextlib.suppress(ServiceStartError):
            done = self._pg_ctl("stop", "-m", "fast", "-w", "-t", timeout, timeout=15)
            if done.returncode == 0:
                return
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGKILL)


def _write_postgres_conf(data_dir: Path, port: int, socket_dir: Path, fast: bool) -> None:
    """Our settings, in a file of their own included by ``postgresql.conf`` (written once)."""
    settings = {
        "listen_addresses": "'127.0.0.1'",
        "port": str(port),
        "unix_socket_directories": f"'{socket_dir}'",
        "max_connections": "200",
        **(FAST_SETTINGS if fast else {}),
    }
    (data_dir / "market.conf").write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))
    main = data_dir / "postgresql.conf"
    include = "include_if_exists = 'market.conf'\n"
    if include not in main.read_text():
        with main.open("a") as conf:
            conf.write(include)


def _previous_postgres_port(data_dir: Path) -> int | None:
    """The port of the last start: a restarted server keeps its URL while nobody took the port."""
    try:
        found = re.search(r"^port = (\d+)$", (data_dir / "market.conf").read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(found.group(1)) if found else None


def start_postgres(
    root: Path,
    port: int | None = None,
    *,
    fast: bool = False,
    timeout: float = START_TIMEOUT_SECONDS,
) -> PostgresServer:
    """PostgreSQL in ``root`` (created with ``initdb`` on first use), with a ``market`` database.

    ``port=None`` picks a free one (retried if another process takes it first); ``fast`` turns off
    fsync for throwaway test servers."""
    bindir = find_postgres_bindir()
    run_as = RunAs.for_postgres()
    root.mkdir(parents=True, exist_ok=True)
    root = root.resolve()
    server = PostgresServer(root, port or 0, bindir, run_as)
    if not (server.data_dir / "PG_VERSION").exists():
        _initdb(server, timeout)
    attempts = 1 if port else PORT_ATTEMPTS
    previous = _previous_postgres_port(server.data_dir)
    for attempt in range(attempts):
        server.port = _choose_port(port, previous, attempt)
        _write_postgres_conf(server.data_dir, server.port, root, fast)
        if run_as:
            run_as.hand_over(root)
        log_start = server.log_path.stat().st_size if server.log_path.exists() else 0
        started = server._pg_ctl(
            "start", "-w", "-t", f"{timeout:.0f}", "-l", str(server.log_path), timeout=timeout + 5
        )
        if started.returncode == 0:
            server.ensure_database(POSTGRES_DATABASE)
            return server
        in_use = "Address already in use" in log_tail(server.log_path, since=log_start)
        if not (in_use and attempt + 1 < attempts):
            server.stop()
            raise ServiceStartError(
                f"PostgreSQL did not start on 127.0.0.1:{server.port} within {timeout:.0f} s "
                f"(pg_ctl: {started.stdout.strip()} {started.stderr.strip()}); "
                f"{server.log_path}:\n{log_tail(server.log_path, since=log_start)}"
            )
    raise AssertionError("unreachable")


def _initdb(server: PostgresServer, timeout: float) -> None:
    if server.run_as:
        server.run_as.hand_over(server.root)
    command = [
        str(server.bindir / "initdb"), "-D", str(server.data_dir), "-U", server.user,
        "--auth=trust", "--encoding=UTF8", "--no-locale", "--no-instructions",
    ]  # fmt: skip
    done = _run(command, server.run_as, server.root, timeout)
    if done.returncode != 0:
        raise ServiceStartError(
            f"initdb failed in {server.data_dir} (exit {done.returncode}):\n"
            f"{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )


@dataclass
class RedisServer:
    """A running ``redis-server`` with no persistence; its working folder and log in ``root``."""

    root: Path
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        """Database 0: the value for ``MARKET_CELERY_BROKER_URL``."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.root / "redis.log"

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(
    root: Path, port: int | None = None, *, timeout: float = START_TIMEOUT_SECONDS
) -> RedisServer:
    """``redis-server`` on 127.0.0.1, nothing saved to disk, answering PING when this returns."""
    binary = find_redis_server()
    root.mkdir(parents=True, exist_ok=True)
    root = root.resolve()
    attempts = 1 if port else PORT_ATTEMPTS
    port_file = root / "redis.port"
    previous = None
    with contextlib.suppress(OSError, ValueError):
        previous = int(port_file.read_text())
    for attempt in range(attempts):
        chosen = _choose_port(port, previous, attempt)
        port_file.write_text(str(chosen))
        log = root / "redis.log"
        log.unlink(missing_ok=True)
        command = [
            str(binary), "--bind", "127.0.0.1", "--port", str(chosen), "--dir", str(root),
            "--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", str(log),
        ]  # fmt: skip
        process = subprocess.Popen(command, cwd=root, process_group=0)
        server = RedisServer(root, chosen, process)
        deadline = time.monotonic() + timeout
        while process.poll() is None and time.monotonic() < deadline:
            if _redis_answers(chosen):
                return server
            time.sleep(0.05)
        server.stop()
        in_use = "Address already in use" in log_tail(log)
        if not (in_use and attempt + 1 < attempts):
            raise ServiceStartError(
                f"redis-server did not answer on 127.0.0.1:{chosen} within {timeout:.0f} s "
                f"(exit code {process.returncode}); {log}:\n{log_tail(log)}"
            )
    raise AssertionError("unreachable")
