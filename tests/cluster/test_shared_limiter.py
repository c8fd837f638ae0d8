"""One key, one limit, across machines: the limiter's buckets in PostgreSQL.

The machines are processes with data homes of their own; only ``MARKET_POSTGRES_URL`` joins them.
The stub counts the calls that reach it, so the limit is judged where the vendor judges it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import psycopg
import pytest

from market_pipeline.source.rate_limit import (
    BURST_BUCKET,
    DAY_BUCKET,
    bucket_table,
    calls_available,
)
from tests.cluster.machines import Barrier, children, finished, machine_env, python
from tests.cluster.services import PostgresService
from tests.conftest import TEST_KEY
from tests.pipeline.test_rate_limit import max_in_window
from tests.stubs.alpha_vantage import AlphaVantageStub

PER_SECOND, PER_DAY, CALLS_EACH = 2, 9, 6
FETCH = """
from dagster import build_resources
from market_core.home import DataHome
from market_pipeline.defs.resources import AlphaVantageResource
from market_pipeline.source.errors import DailyQuotaError

resource = AlphaVantageResource.from_env(str(DataHome.from_env().root))
with build_resources({{"alpha_vantage": resource}}) as resolved:
    client = resolved.alpha_vantage.client()
    for symbol in {symbols!r}:
        try:
            client.fetch_daily(symbol, "compact")
            print("ok", symbol, flush=True)
        except DailyQuotaError:
            print("quota", symbol, flush=True)
"""


def start_fetchers(
    barrier: Barrier,
    homes: dict[str, Path],
    shared: dict[str, str],
    stub: AlphaVantageStub,
    each: int,
    started: list[subprocess.Popen[str]],
) -> None:
    """A machine per home fetching ``each`` symbols of its own, all let go at once."""
    for prefix, home in homes.items():
        symbols = [f"{prefix}{i}" for i in range(each)]
        code = barrier.child_code(prefix) + FETCH.format(symbols=symbols)
        started.append(python(code, machine_env(home, shared, **key_env(stub))))
    barrier.release_when_ready(len(homes), started)


def key_env(stub: AlphaVantageStub) -> dict[str, str]:
    return {
        "ALPHAVANTAGE_API_KEY": TEST_KEY,
        "ALPHAVANTAGE_BASE_URL": stub.url,
        "ALPHAVANTAGE_REQUESTS_PER_SECOND": str(PER_SECOND),
        "ALPHAVANTAGE_REQUESTS_PER_MINUTE": "0",
        "ALPHAVANTAGE_REQUESTS_PER_DAY": str(PER_DAY),
    }


def available(state_dir: Path, url: str | None) -> int | None:
    limits = {"per_second": PER_SECOND, "per_minute": 0, "per_day": PER_DAY}
    return calls_available(state_dir, TEST_KEY, postgres_url=url, **limits)


def test_two_machines_share_the_keys_per_second_and_daily_limits(
    postgres: PostgresService, stub: AlphaVantageStub, tmp_path: Path
) -> None:
    url = postgres.fresh_database()
    shared = {"MARKET_POSTGRES_URL": url}
    barrier = Barrier(tmp_path)
    homes = {"A": tmp_path / "machine-a", "B": tmp_path / "machine-b"}
    with children() as started:
        start_fetchers(barrier, homes, shared, stub, CALLS_EACH, started)
        outputs = [finished(child, timeout=120) for child in started]

    answers = [line.split() for out in outputs for line in out.splitlines()]
    assert sum(1 for verdict, _ in answers if verdict == "ok") == PER_DAY
    assert sum(1 for verdict, _ in answers if verdict == "quota") == 2 * CALLS_EACH - PER_DAY
    times = [request.at for request in stub.requests]
    assert len(times) == PER_DAY, "a call refused for the quota never reaches the vendor"
    assert max_in_window(times, 1.0) <= PER_SECOND, "no second holds more than the key allows"
    assert {request.symbol[0] for request in stub.requests} == {"A", "B"}, "both took turns"

    for home in homes.values():
        assert not list((home / "state").glob("ratelimit-*.sqlite")), "no machine kept its own"
    with psycopg.connect(url) as conn:
        names = {row[0] for row in conn.execute("SELECT tablename FROM pg_tables").fetchall()}
    table = bucket_table(TEST_KEY)
    assert {f"ratelimit___{table}_{DAY_BUCKET}", f"ratelimit___{table}_{BURST_BUCKET}"} <= names
    assert TEST_KEY not in " ".join(names), "tables are named by the key's hash"

    assert available(tmp_path / "machine-c" / "state", url) == 0, "the plan sees the shared day"
    assert available(tmp_path / "machine-c" / "state", None) == PER_DAY, "SQLite stays local"


def test_an_unreachable_database_stops_the_limiter_with_a_message_without_the_password(
    tmp_path: Path,
) -> None:
    from market_pipeline.source.rate_limit import LimiterStoreError, SharedRateLimiter
    from tools.services import free_port

    url = f"postgresql://u:hunter2-secret@127.0.0.1:{free_port()}/x?connect_timeout=1"
    limiter = SharedRateLimiter(
        tmp_path, TEST_KEY, per_second=1, per_minute=0, per_day=5, postgres_url=url
    )
    expected = r"cannot reach PostgreSQL at 127\.0\.0\.1"
    with pytest.raises(LimiterStoreError, match=expected) as raised:
        limiter.acquire("AAA")
    assert "hunter2" not in str(raised.value)
