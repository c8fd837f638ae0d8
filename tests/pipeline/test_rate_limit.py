"""The key's limits hold across processes, counted by the stub that receives the calls."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pyrate_limiter import Duration, Rate

from market_core.home import DataHome
from market_pipeline.resources.alpha_vantage import AlphaVantageClient
from market_pipeline.resources.av_errors import DailyQuotaError
from market_pipeline.resources.rate_limit import effective_rates
from tests.conftest import TEST_KEY
from tests.stubs.alpha_vantage import AlphaVantageStub

REPO = Path(__file__).resolve().parents[2]


def max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def test_two_processes_share_the_per_second_limit(stub: AlphaVantageStub, home: DataHome) -> None:
    per_second, calls_each = 2, 6

    def worker(prefix: str) -> subprocess.Popen[bytes]:
        symbols = ",".join(f"{prefix}{i}" for i in range(calls_each))
        command = ["-m", "tests.pipeline.limiter_worker", str(home.root), stub.url, TEST_KEY]
        return subprocess.Popen([sys.executable, *command, str(per_second), symbols], cwd=REPO)

    workers = [worker("A"), worker("B")]
    for worker in workers:
        assert worker.wait(timeout=60) == 0
    times = [r.at for r in stub.requests]
    assert len(times) == 2 * calls_each
    assert max_in_window(times, 1.0) <= per_second
    assert {r.symbol[0] for r in stub.requests} == {"A", "B"}


def test_daily_limit_fails_fast_without_calling(stub: AlphaVantageStub, home: DataHome) -> None:
    client = AlphaVantageClient(
        home=home, api_key=TEST_KEY, base_url=stub.url, requests_per_second=0,
        requests_per_minute=0, requests_per_day=2,
    )  # fmt: skip
    client.fetch_daily("AAA", "compact")
    client.fetch_daily("BBB", "compact")
    with pytest.raises(DailyQuotaError, match=r"CCC: .*retry after the quota resets"):
        client.fetch_daily("CCC", "compact")
    assert stub.count() == 2


def test_a_second_key_has_its_own_budget(stub: AlphaVantageStub, home: DataHome) -> None:
    def client(key: str) -> AlphaVantageClient:
        return AlphaVantageClient(
            home=home, api_key=key, base_url=stub.url, requests_per_second=0,
            requests_per_minute=0, requests_per_day=1,
        )  # fmt: skip

    client("KEY-ONE").fetch_daily("AAA", "compact")
    client("KEY-TWO").fetch_daily("AAA", "compact")
    with pytest.raises(DailyQuotaError):
        client("KEY-ONE").fetch_daily("BBB", "compact")


def test_limits_implied_by_a_tighter_one_are_dropped() -> None:
    def kept(*rates: tuple[int, int]) -> list[tuple[int, int]]:
        found = effective_rates([Rate(limit, interval) for limit, interval in rates])
        return [(r.limit, r.interval) for r in found]

    second, minute = Duration.SECOND, Duration.MINUTE
    assert kept((1, second), (75, minute)) == [(1, second)]
    assert kept((1, second), (5, minute)) == [(1, second), (5, minute)]
    assert kept((5, second), (3, minute)) == [(3, minute)]
