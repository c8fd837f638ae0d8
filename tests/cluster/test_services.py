"""The cluster fixtures give a working PostgreSQL and Redis, isolated per test, on loopback only."""

from __future__ import annotations

import socket
from pathlib import Path

import psycopg
import pytest
from redis import Redis

from market_core.services import ServiceNotInstalled, find_postgres_bindir, find_redis_server
from tests.cluster.services import LOOPBACK_HEX, PostgresService, RedisService, listeners


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
    monkeypatch.setattr("market_core.services.POSTGRES_SEARCH", ("/nonexistent/*/bin",))
    with pytest.raises(ServiceNotInstalled, match="apt-get install postgresql redis-server"):
        find_postgres_bindir()
    monkeypatch.setattr("shutil.which", lambda *_args, **_kw: None)
    with pytest.raises(ServiceNotInstalled, match="apt-get install postgresql redis-server"):
        find_redis_server()
