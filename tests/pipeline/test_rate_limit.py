"""The key's limits hold across processes, counted by the stub that receives the calls."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pyrate_limiter import Duration, InMemoryBucket, Rate, RateItem, SQLiteBucket

from market_core.home import DataHome
from market_pipeline.source.client import AlphaVantageClient
from market_pipeline.source.errors import DailyQuotaError
from market_pipeline.source.rate_limit import (
    DAY_BUCKET,
    DAY_MAX_WAIT_SECONDS,
    day_rate,
    day_wait_ms,
    earliest_call_ms,
    effective_rates,
    now_ms,
    open_bucket,
    permits_in_window,
    runnable_calls,
    window_stamps,
)
from tests.conftest import TEST_KEY
from tests.pipeline.helpers import spend
from tests.stubs.alpha_vantage import AlphaVantageStub

REPO = Path(__file__).resolve().parents[2]
VENDOR_DAY = 86_400.0  # the window a counting stub applies: any 24 hours, in seconds


def max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def leaving_in(*seconds: float, per_day: int) -> list[int]:
    """Permit times that leave the day window that many seconds from now."""
    start = now_ms() - day_rate(per_day).interval
    return [start + int(s * 1000) for s in seconds]


def day_client(home: DataHome, stub: AlphaVantageStub, per_day: int) -> AlphaVantageClient:
    return AlphaVantageClient(
        home=home, api_key=TEST_KEY, base_url=stub.url, requests_per_second=0,
        requests_per_minute=0, requests_per_day=per_day,
    )  # fmt: skip


@pytest.fixture
def spawn() -> Iterator[Callable[[list[str]], subprocess.Popen[str]]]:
    """Starts limiter workers and kills any still running when the test ends, failed or not."""
    started: list[subprocess.Popen[str]] = []

    def start(args: list[str]) -> subprocess.Popen[str]:
        command = [sys.executable, "-m", "tests.pipeline.limiter_worker", *args]
        started.append(subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True))
        return started[-1]

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_two_processes_share_the_per_second_limit(
    stub: AlphaVantageStub, home: DataHome, spawn: Callable[[list[str]], subprocess.Popen[str]]
) -> None:
    per_second, calls_each = 2, 6

    def worker(prefix: str) -> subprocess.Popen[str]:
        symbols = ",".join(f"{prefix}{i}" for i in range(calls_each))
        return spawn([str(home.root), stub.url, TEST_KEY, str(per_second), symbols])

    workers = [worker("A"), worker("B")]
    for worker in workers:
        worker.communicate(timeout=60)
        assert worker.returncode == 0
    times = [r.at for r in stub.requests]
    assert len(times) == 2 * calls_each
    assert max_in_window(times, 1.0) <= per_second
    assert {r.symbol[0] for r in stub.requests} == {"A", "B"}


def test_daily_limit_fails_fast_without_calling(stub: AlphaVantageStub, home: DataHome) -> None:
    client = day_client(home, stub, per_day=2)
    client.fetch_daily("AAA", "compact")
    client.fetch_daily("BBB", "compact")
    started = time.monotonic()
    with pytest.raises(DailyQuotaError, match=r"CCC: .*retry after the quota resets: the next "
                       r"call is free at \d{4}-\d\d-\d\d \d\d:\d\d"):  # fmt: skip
        client.fetch_daily("CCC", "compact")
    assert time.monotonic() - started < 1.0, "no waiting for a day that frees up tomorrow"
    assert stub.count() == 2


def test_a_call_waits_for_a_day_permit_about_to_free_up(
    stub: AlphaVantageStub, home: DataHome
) -> None:
    earlier = spend(home, 2, leaving_in(1.5, 30_000, per_day=2))
    started = time.monotonic()
    day_client(home, stub, per_day=2).fetch_daily("AAA", "compact")
    assert time.monotonic() - started >= 1.4, "it waited for the oldest call to leave"
    [request] = stub.requests
    assert request.at - earlier[0] >= day_rate(2).interval / 1000
    assert max_in_window([*earlier, request.at], VENDOR_DAY) <= 2


def test_a_quota_that_frees_up_only_after_the_bound_fails_at_once(
    stub: AlphaVantageStub, home: DataHome
) -> None:
    spend(home, 2, leaving_in(DAY_MAX_WAIT_SECONDS + 5, 30_000, per_day=2))
    started = time.monotonic()
    with pytest.raises(DailyQuotaError, match=r"AAA: .*used up; retry after the quota resets"):
        day_client(home, stub, per_day=2).fetch_daily("AAA", "compact")
    assert time.monotonic() - started < 1.0
    assert stub.count() == 0


def test_two_processes_share_the_daily_limit_and_the_calls_leaving_it(
    stub: AlphaVantageStub, home: DataHome, spawn: Callable[[list[str]], subprocess.Popen[str]]
) -> None:
    """Two calls of the window leave it while two processes wait; the third stays all day."""
    per_day = 3
    earlier = spend(home, per_day, leaving_in(6, 7, 20 * 3600, per_day=per_day))

    def worker(prefix: str) -> subprocess.Popen[str]:
        return spawn(
            [str(home.root), stub.url, TEST_KEY, "0", f"{prefix}1,{prefix}2", str(per_day)]
        )

    workers = [worker("A"), worker("B")]
    refused = []
    for process in workers:
        out, _ = process.communicate(timeout=60)
        assert process.returncode == 0
        refused += out.split()[1::2]
    times = [r.at for r in stub.requests]
    assert len(times) == 2 and len(refused) == 2, "each leaving call was used once, no more"
    assert min(times) - earlier[0] >= day_rate(per_day).interval / 1000
    assert max_in_window(earlier + times, VENDOR_DAY) <= per_day


def test_a_run_counts_the_calls_that_leave_the_window_before_it_reaches_them() -> None:
    day, burst = day_rate(5), [Rate(1, 1100), Rate(2, 66_000)]
    assert [earliest_call_ms(burst, n) for n in range(5)] == [0, 1100, 66_000, 66_000, 132_000]
    wait = 300_000
    start = -day.interval  # permits that leave the window at 0 ms (now) plus their offset

    def calls(*offsets_ms: int) -> int:
        return runnable_calls([start + o for o in offsets_ms], day, burst, 0, wait)

    assert calls() == 5
    assert calls(0, 1100) == 5, "three free; the other two leave before the run needs them"
    assert calls(0, 1100, 66_000, 66_000, 132_000) == 5, "yesterday's pace, a day later"
    assert calls(0, 1100, 66_000, 132_000 + wait + 1) == 4, "the fifth call would wait too long"
    assert calls(wait + 1, *[wait + 2] * 4) == 0, "none frees up within the bound"


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_the_day_window_is_read_through_pyrates_public_api(home: DataHome, kind: str) -> None:
    """The same answers from the key's SQLite bucket and from a bucket with no table at all.

    Permits go in through ``put`` of the installed pyrate-limiter, one of them old enough to be
    outside the window but not leaked: a reader of a storage layout, rather than of ``peek``,
    cannot see the in-memory bucket's permits and fails here.
    """
    day = day_rate(3)
    at = now_ms()
    outside, first, second, third = (at - day.interval - 5_000, at - day.interval + 2_000,
                                     at - 60_000, at - 1_000)  # fmt: skip
    bucket: SQLiteBucket | InMemoryBucket = (
        open_bucket(home.state_dir, TEST_KEY, DAY_BUCKET, [day])
        if kind == "sqlite"
        else InMemoryBucket([day])
    )
    try:
        for stamp in (outside, first, second):
            assert bucket.put(RateItem("EARLIER", stamp))
        assert bucket.count() == 3, "the old permit is still stored"
        assert permits_in_window(bucket, day, at) == [first, second]
        assert day_wait_ms(bucket, day, at) == 0, "one permit is free"

        assert bucket.put(RateItem("EARLIER", third))
        assert not bucket.put(RateItem("REFUSED", at)), "pyrate agrees the window is full"
        assert permits_in_window(bucket, day, at) == [first, second, third]
        assert day_wait_ms(bucket, day, at) == 2_001, "until the oldest leaves, past the bound"
        assert day_wait_ms(bucket, day, at + 2_001) == 0
        assert bucket.put(RateItem("LATER", at + 2_001)), "and pyrate admits one then"
    finally:
        bucket.close()
    if kind == "sqlite":
        in_file = window_stamps(home.state_dir, TEST_KEY, day, at + 2_001)
        assert in_file == [second, third, at + 2_001], "another opening of the file reads the same"


def test_no_bucket_file_means_no_calls_yet(home: DataHome) -> None:
    assert window_stamps(home.state_dir, TEST_KEY, day_rate(3), now_ms()) == []
    assert not home.state_dir.exists() or not any(home.state_dir.iterdir()), "nothing created"


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
