"""The test side of ``tools.services``: throwaway servers in temporary folders.

The folders come from ``tempfile`` (``/tmp``), not from pytest's ``tmp_path``: pytest's base
folder is private to its user, and PostgreSQL, which refuses root, may run as another one.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis

from tools.services import PostgresServer, RedisServer, start_postgres, start_redis

LOOPBACK_HEX = "0100007F"  # 127.0.0.1 as /proc/net/tcp writes it
TCP_LISTEN = "0A"


def listeners(port: int) -> list[str]:
    """The local addresses (hex, as the kernel lists them) of every TCP socket listening on port."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].rsplit(":", 1)
            if int(port_hex, 16) == port and fields[3] == TCP_LISTEN:
                found.append(address)
    return found


@dataclass
class PostgresService:
    """A session's PostgreSQL: ``url`` is its ``market`` database, shared; tests that write
    should take their own with ``fresh_database()``."""

    server: PostgresServer
    _names: Iterator[int] = field(default_factory=itertools.count)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def port(self) -> int:
        return self.server.port

    def fresh_database(self) -> str:
        """The URL of a new, empty database that no other test sees."""
        return self.server.create_database(f"t{next(self._names)}_{uuid.uuid4().hex[:8]}")

    def stop_server(self) -> None:
        """Stop PostgreSQL (fast shutdown: open sessions end), as a restart or crash does."""
        self.server.stop()

    def start_server(self) -> None:
        """Start it again on the same port and data: every URL handed out stays valid."""
        self.server = start_postgres(self.server.root, self.server.port, fast=True)


@dataclass
class RedisService:
    server: RedisServer
    _names: Iterator[int] = field(default_factory=itertools.count)

    @property
    def url(self) -> str:
        """Database 0; a test that must not share keys may use ``fresh_database()`` instead."""
        return self.server.url

    @property
    def port(self) -> int:
        return self.server.port

    def fresh_database(self) -> str:
        """Another of Redis's 16 numbered databases (1..15), flushed, for a test of its own."""
        number = next(self._names) % 15 + 1
        client = redis.Redis.from_url(f"redis://127.0.0.1:{self.port}/{number}")
        try:
            client.flushdb()
        finally:
            client.close()
        return f"redis://127.0.0.1:{self.port}/{number}"

    def stop_server(self) -> None:
        """Stop Redis. It keeps nothing on disk, so a restart loses every queued message and
        stored result: the worst a restart can do."""
        self.server.stop()

    def start_server(self) -> None:
        """Start it again, empty, on the same port: every URL handed out stays valid."""
        self.server = start_redis(self.server.root, self.server.port)


@contextmanager
def _scratch(prefix: str) -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def postgres_service() -> Iterator[PostgresService]:
    with _scratch("market-pg-") as root:
        service = PostgresService(start_postgres(root, fast=True))
        try:
            yield service
        finally:
            service.server.stop()  # the latest server, if the test restarted it


@contextmanager
def redis_service() -> Iterator[RedisService]:
    with _scratch("market-redis-") as root:
        service = RedisService(start_redis(root))
        try:
            yield service
        finally:
            service.server.stop()  # the latest server, if the test restarted it
