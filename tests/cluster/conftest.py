"""Session-wide PostgreSQL and Redis for the ``cluster`` tests, and the ``cluster`` mark.

A missing server fails the tests rather than skipping them: CI must run them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from typing import TypeVar

import pytest

from tests.cluster.services import PostgresService, RedisService, postgres_service, redis_service
from tools.services import ServiceError

HERE = Path(__file__).parent
Service = TypeVar("Service")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test in this folder is a ``cluster`` test, marked before ``-m`` selects."""
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.cluster)


def started(
    stack: ExitStack, start: Callable[[], AbstractContextManager[Service]], what: str
) -> Service:
    try:
        return stack.enter_context(start())
    except ServiceError as exc:
        message = f"the cluster tests need a real {what}: {exc}"
    pytest.fail(message, pytrace=False)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresService]:
    """PostgreSQL 15 on 127.0.0.1; ``.url`` (database ``market``), ``.fresh_database()``."""
    with ExitStack() as stack:
        yield started(stack, postgres_service, "PostgreSQL")


@pytest.fixture
def own_postgres() -> Iterator[PostgresService]:
    """A PostgreSQL of the test's own, which it may stop and start (``stop_server``)."""
    with ExitStack() as stack:
        yield started(stack, postgres_service, "PostgreSQL")


@pytest.fixture
def own_redis() -> Iterator[RedisService]:
    """A Redis of the test's own, which it may stop and start (``stop_server``)."""
    with ExitStack() as stack:
        yield started(stack, redis_service, "Redis")


@pytest.fixture(scope="session")
def redis() -> Iterator[RedisService]:
    """``redis-server`` on 127.0.0.1, no persistence; ``.url`` (database 0)."""
    with ExitStack() as stack:
        yield started(stack, redis_service, "Redis")


@pytest.fixture
def shared_env(postgres: PostgresService, redis: RedisService, tmp_path: Path) -> dict[str, str]:
    """The three variables every machine of a test shares: a database and a broker of its own."""
    return {
        "MARKET_POSTGRES_URL": postgres.fresh_database(),
        "MARKET_SHARED_HOME": str(tmp_path / "shared"),
        "MARKET_CELERY_BROKER_URL": redis.fresh_database(),
    }
