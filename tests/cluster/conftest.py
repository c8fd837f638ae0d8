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


@pytest.fixture(scope="session")
def redis() -> Iterator[RedisService]:
    """``redis-server`` on 127.0.0.1, no persistence; ``.url`` (database 0)."""
    with ExitStack() as stack:
        yield started(stack, redis_service, "Redis")
