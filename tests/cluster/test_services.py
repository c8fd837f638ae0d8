"""The cluster fixtures give a working PostgreSQL and Redis, isolated per test, on loopback only."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from redis import Redis

from tests.cluster.services import LOOPBACK_HEX, PostgresService, RedisService, listeners
from tools.services import (
    ServiceNotInstalled,
    ServiceStartError,
    find_postgres_bindir,
    find_redis_server,
    reachable_postgres_folder,
    start_postgres,
    start_redis,
)


def test_postgres_answers_at_its_url(postgres: PostgresService) -> None:
    assert postgres.url == f"postgresql://market@127.0.0.1:{postgres.port}/market"
    with psycopg.connect(postgres.url) as conn:
        row = conn.execute("SELECT current_database(), current_setting('server_version_num')")
        database, version = row.fetchone() or ("", "0")
    assert database == "market"
    assert int(version) >= 150000


def test_fresh_databases_share_nothing(postgres: PostgresService) -> None:
    first, second = postgres.fresh_database(), postgres.fresh_database()
    assert first != second
    with psycopg.connect(first) as conn:
        conn.execute("CREATE TABLE bars (symbol text PRIMARY KEY)")
        conn.execute("INSERT INTO bars VALUES ('IBM')")
    with psycopg.connect(first) as conn:
        assert conn.execute("SELECT symbol FROM bars").fetchall() == [("IBM",)]
    with psycopg.connect(second) as conn:
        tables = conn.execute("SELECT to_regclass('bars')").fetchone()
    assert tables == (None,)


def test_redis_sets_and_gets(redis: RedisService) -> None:
    assert redis.url == f"redis://127.0.0.1:{redis.port}/0"
    client = Redis.from_url(redis.url)
    try:
        client.set("market:probe", b"42")
        assert client.get("market:probe") == b"42"
        # No persistence: nothing is ever written to disk.
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}
    finally:
        client.close()


def test_redis_fresh_database_is_empty(redis: RedisService) -> None:
    shared = Redis.from_url(redis.url)
    own = Redis.from_url(redis.fresh_database())
    try:
        shared.set("market:shared", b"1")
        assert own.get("market:shared") is None
        assert own.dbsize() == 0
    finally:
        shared.close()
        own.close()


def test_nothing_listens_beyond_loopback(postgres: PostgresService, redis: RedisService) -> None:
    for port in (postgres.port, redis.port):
        assert listeners(port) == [LOOPBACK_HEX], f"port {port}"
    # The unix socket is in the server's own folder, never in the system's /var/run.
    assert postgres.server.socket_path.is_socket()
    assert not Path(f"/var/run/postgresql/.s.PGSQL.{postgres.port}").exists()
    # The port is taken: a second server could not bind it.
    with socket.socket() as probe, pytest.raises(OSError):
        probe.bind(("127.0.0.1", postgres.port))


def test_binaries_are_found() -> None:
    bindir = find_postgres_bindir()
    assert (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file()
    assert find_redis_server().name == "redis-server"


def test_missing_binaries_name_the_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr("tools.services.POSTGRES_SEARCH", ("/nonexistent/*/bin",))
    with pytest.raises(ServiceNotInstalled, match="apt-get install postgresql redis-server"):
        find_postgres_bindir()
    monkeypatch.setattr("shutil.which", lambda *_args, **_kw: None)
    with pytest.raises(ServiceNotInstalled, match="apt-get install postgresql redis-server"):
        find_redis_server()


@pytest.fixture
def scratch() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="market-svc-"))
    root.chmod(0o755)  # PostgreSQL's own user must enter it
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_server_that_cannot_start_shows_its_log(scratch: Path) -> None:
    """A port already taken: both starters give up and quote what the server logged."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServiceStartError, match="Address already in use") as postgres:
            start_postgres(scratch / "postgres", port, fast=True, timeout=30)
        assert "postgres.log" in str(postgres.value)
        assert not (scratch / "postgres" / "data" / "postmaster.pid").exists()
        with pytest.raises(ServiceStartError, match="Address already in use") as redis:
            start_redis(scratch / "redis", port, timeout=30)
        assert "redis.log" in str(redis.value)


def test_a_restarted_postgres_keeps_its_port_and_data(scratch: Path) -> None:
    first = start_postgres(scratch / "postgres", fast=True)
    try:
        with psycopg.connect(first.url) as conn:
            conn.execute("CREATE TABLE kept (n int)")
    finally:
        first.stop()
    again = start_postgres(scratch / "postgres", fast=True)
    try:
        assert again.port == first.port
        with psycopg.connect(again.url) as conn:
            assert conn.execute("SELECT count(*) FROM kept").fetchone() == (0,)
    finally:
        again.stop()


def test_postgres_runs_below_a_private_folder(scratch: Path) -> None:
    """A checkout in /root: as root, the server's own user cannot enter it, yet it starts."""
    private = scratch / "private"
    private.mkdir(mode=0o700)
    wanted = private / "cluster" / "postgres"
    folder = reachable_postgres_folder(wanted)
    assert folder == wanted
    assert wanted.is_symlink() == (os.geteuid() == 0)
    server = start_postgres(folder, fast=True)
    try:
        with psycopg.connect(server.url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert (wanted / "data" / "PG_VERSION").is_file()
        assert reachable_postgres_folder(wanted) == wanted  # found again at the next start
    finally:
        server.stop()
        if wanted.is_symlink():
            shutil.rmtree(wanted.resolve(), ignore_errors=True)
