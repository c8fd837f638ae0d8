"""One Alpha Vantage quota shared by every process and machine that uses the key: a burst bucket
and a rolling day bucket, in SQLite under the data home or in PostgreSQL when
``MARKET_POSTGRES_URL`` is set. How the two are waited on: docs/design/pipeline-internals.md.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import itertools
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

from psycopg import conninfo as pg_conninfo
from psycopg_pool import ConnectionPool, PoolTimeout
from pyrate_limiter import AbstractBucket, Duration, Limiter, Rate, RateItem, SQLiteBucket
from pyrate_limiter.buckets.postgres import PostgresBucket

from market_core.lake import POSTGRES_URL_VAR
from market_pipeline.source.errors import DailyQuotaError, RateLimitedError

DAY_MARGIN_MS = 60_000
DAY_MAX_WAIT_SECONDS = 300.0
DAY_BUCKET, BURST_BUCKET = "day", "burst"
MIN_MARGIN_MS = 500
POSTGRES_CONNECT_SECONDS = 10.0
POSTGRES_POOL_SIZE = 4
DAY_PUT_ATTEMPTS = 20
DAY_PUT_RETRY_SECONDS = 0.02


class LimiterStoreError(RuntimeError):
    """The PostgreSQL holding the key's buckets (``MARKET_POSTGRES_URL``) could not be reached."""


def widened(limit: int, interval: Duration) -> Rate:
    """A per-second or per-minute rate whose window is a little longer than the vendor's.

    A permit is taken a few milliseconds before the request reaches Alpha Vantage, and that
    delay varies (connection set-up, scheduling); a window longer by 10 %, at least
    ``MIN_MARGIN_MS`` and at most 2 s, keeps the arrivals, not just the permits, within the
    limit. The floor is for the one-second window: on a busy two-core machine (two runs, each
    cleaning and loading on other threads) a permitted request was seen to arrive 0.3 s late,
    so 10 % of a second (0.1 s) let three arrivals into one second at a limit of two.
    """
    interval_ms = int(interval.value)
    return Rate(limit, interval_ms + min(2000, max(MIN_MARGIN_MS, interval_ms // 10)))


def burst_rates(per_second: int, per_minute: int) -> list[Rate]:
    pairs = ((per_second, Duration.SECOND), (per_minute, Duration.MINUTE))
    return [widened(limit, interval) for limit, interval in pairs if limit > 0]


def day_rate(per_day: int) -> Rate:
    """The daily quota over 24 hours plus ``DAY_MARGIN_MS``.

    The margin covers the time from a permit to the request's arrival (connecting is bounded by
    a 10 s timeout), as ``widened`` does for the short windows; it is a fixed minute rather than
    a share of the day because every minute of it delays the next day's update by as much.
    """
    return Rate(per_day, int(Duration.DAY.value) + DAY_MARGIN_MS)


def bucket_path(state_dir: Path, name: str) -> Path:
    return state_dir / f"ratelimit-{name}.sqlite"


def bucket_table(api_key: str) -> str:
    return f"av_{key_id(api_key)}"


def key_id(api_key: str) -> str:
    """A stable, non-reversible name for a key: buckets and state files are named by it."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:16]


def effective_rates(rates: list[Rate]) -> list[Rate]:
    """Drop limits another limit already implies (1/s makes 75/min moot).

    pyrate-limiter accepts only lists where a longer window has a larger limit and a lower
    density; after dropping implied limits every list has that shape.
    """
    kept = sorted(rates, key=lambda r: r.interval)
    changed = True
    while changed:
        changed = False
        for shorter, longer in itertools.pairwise(kept):
            windows = -(-longer.interval // shorter.interval)
            if longer.limit >= shorter.limit * windows:
                kept.remove(longer)
            elif longer.limit <= shorter.limit:
                kept.remove(shorter)
            else:
                continue
            changed = True
            break
    return kept


def open_bucket(state_dir: Path, api_key: str, name: str, rates: list[Rate]) -> SQLiteBucket:
    """One of the key's buckets in the data home, locked by a file lock beside it."""
    state_dir.mkdir(parents=True, exist_ok=True)
    return SQLiteBucket.init_from_file(
        rates,
        table=bucket_table(api_key),
        db_path=str(bucket_path(state_dir, name)),
        use_file_lock=True,
    )


def postgres_url_from_env() -> str | None:
    """``MARKET_POSTGRES_URL``, whose database then holds the buckets of every machine."""
    return os.environ.get(POSTGRES_URL_VAR, "").strip() or None


def open_postgres_bucket(url: str, api_key: str, name: str, rates: list[Rate]) -> PostgresBucket:
    """One of the key's buckets as a table in PostgreSQL, on a small pool of its own.

    The table is ``ratelimit___av_<key hash>_<bucket>``: one per key, as the SQLite file is.
    """
    pool: ConnectionPool[Any] = ConnectionPool(
        url,
        min_size=1,
        max_size=POSTGRES_POOL_SIZE,
        kwargs={"options": "-c timezone=UTC"},
        open=False,
        name=f"ratelimit-{name}",
    )
    try:
        pool.open(wait=True, timeout=POSTGRES_CONNECT_SECONDS)
    except PoolTimeout:
        pool.close()
        raise LimiterStoreError(
            f"the Alpha Vantage limiter cannot reach PostgreSQL at {_where(url)} within "
            f"{POSTGRES_CONNECT_SECONDS:.0f} s (MARKET_POSTGRES_URL, which holds the key's "
            "shared limits); start it or fix the variable"
        ) from None
    return PostgresBucket(pool, f"{bucket_table(api_key)}_{name}", rates)


def _where(url: str) -> str:
    """Host, port and database of ``url``: enough to find it, never its password."""
    try:
        parts = pg_conninfo.conninfo_to_dict(url)
    except Exception:  # psycopg's message would quote the URL
        return "an unreadable URL"
    return f"{parts.get('host', 'localhost')}:{parts.get('port', 5432)}/{parts.get('dbname', '')}"


@dataclass(frozen=True)
class BucketStore:
    """Where a key's buckets live: SQLite files in the data home, or tables in PostgreSQL."""

    state_dir: Path
    postgres_url: str | None = field(default=None, repr=False)

    def open(self, api_key: str, name: str, rates: list[Rate]) -> AbstractBucket:
        if self.postgres_url is None:
            return open_bucket(self.state_dir, api_key, name, rates)
        return open_postgres_bucket(self.postgres_url, api_key, name, rates)

    def clock(self, bucket: AbstractBucket) -> Callable[[], int]:
        """The time permits are stamped with: the wall clock, or the database's."""
        if self.postgres_url is None:
            return now_ms
        return synchronous(bucket).now

    def window_stamps(self, api_key: str, day: Rate) -> tuple[list[int], int]:
        """The permits in the key's day window ending now, and that now (on the store's clock)."""
        if self.postgres_url is None:
            at = now_ms()
            return window_stamps(self.state_dir, api_key, day, at), at
        return postgres_window_stamps(self.postgres_url, api_key, day)


def now_ms() -> int:
    """The bucket's clock: pyrate-limiter's ``SQLiteBucket`` stamps permits with wall time."""
    return time.time_ns() // 1_000_000


class PermitLog(Protocol):
    """What the day logic reads of a bucket: pyrate-limiter's public ``peek``.

    ``peek(i)`` is the ``i``-th newest permit, the same lookup pyrate-limiter makes for its own
    waits, so the answer holds for any bucket class and any storage layout a release chooses.
    """

    def peek(self, index: int) -> RateItem | None: ...


class SyncBucket(PermitLog, Protocol):
    """What the day logic calls on a bucket. pyrate-limiter types its buckets for sync and async
    use alike; the SQLite and PostgreSQL ones answer synchronously."""

    def put(self, item: RateItem) -> bool: ...

    def leak(self, current_timestamp: int | None = None) -> int: ...

    def now(self) -> int: ...

    def close(self) -> None: ...


def synchronous(bucket: AbstractBucket) -> SyncBucket:
    return cast(SyncBucket, bucket)


def permits_in_window(bucket: PermitLog, day: Rate, at_ms: int) -> list[int]:
    """The times of the permits in the day window that ends at ``at_ms``, oldest first.

    Walks from the newest permit back to the first one outside the window, so permits that were
    not leaked yet are never counted.
    """
    stamps: list[int] = []
    while (item := bucket.peek(len(stamps))) is not None and item.timestamp >= at_ms - day.interval:
        stamps.append(item.timestamp)
    return stamps[::-1]


def window_stamps(state_dir: Path, api_key: str, day: Rate, at_ms: int) -> list[int]:
    """``permits_in_window`` of the key's day bucket; no bucket file means no call was made yet.

    Read under the bucket's file lock, so a permit taken or leaked by another process meanwhile
    cannot shift the newest-first positions under the walk. The answer is still a snapshot: a
    moment-stale one only makes a caller plan a little off, while the bucket enforces the limit.
    """
    if not bucket_path(state_dir, DAY_BUCKET).exists():
        return []
    bucket = open_bucket(state_dir, api_key, DAY_BUCKET, [day])
    try:
        with bucket.limiter_lock() or contextlib.nullcontext():
            return permits_in_window(bucket, day, at_ms)
    finally:
        bucket.close()


def postgres_window_stamps(url: str, api_key: str, day: Rate) -> tuple[list[int], int]:
    """``permits_in_window`` of the key's day table, and the database's time it was read at.

    The walk's peeks are separate statements, so a permit taken meanwhile by another machine can
    shift it by one: a moment-stale plan, as with SQLite, while the bucket enforces the limit.
    """
    bucket = open_postgres_bucket(url, api_key, DAY_BUCKET, [day])
    try:
        at = synchronous(bucket).now()
        return permits_in_window(synchronous(bucket), day, at), at
    finally:
        bucket.close()


def day_wait_ms(bucket: PermitLog, day: Rate, at_ms: int) -> int:
    """How long from ``at_ms`` until the day window has room for one more call.

    The permit that must leave is the ``limit``-th newest, pyrate-limiter's own rule for a
    sliding window; +1 ms because its window includes its lower bound. With fewer permits, or
    that one already out of the window, there is room now.
    """
    blocking = bucket.peek(day.limit - 1)
    if blocking is None:
        return 0
    return max(0, blocking.timestamp + day.interval - at_ms + 1)


def earliest_call_ms(burst: Sequence[Rate], call: int) -> int:
    """The soonest the ``call``-th (0-based) permit of a run can come, the burst limits allow."""
    return max((call // rate.limit * rate.interval for rate in burst), default=0)


def runnable_calls(
    stamps: Sequence[int], day: Rate, burst: Sequence[Rate], at_ms: int, max_wait_ms: int
) -> int:
    """How many calls a run starting at ``at_ms`` makes before one would wait too long.

    The run's calls beyond the free ones each need the window's next-oldest permit to leave. A
    call comes no sooner than the burst limits allow (``earliest_call_ms``), so it waits at most
    until that permit leaves minus that time; it counts while that wait is within ``max_wait_ms``
    (the limiter's own bound), and the first that is not ends the run's calls (a quota error
    stops a run).
    """
    free = day.limit - len(stamps)
    calls = max(0, free)
    for stamp in stamps[max(0, -free) :]:
        if stamp + day.interval > at_ms + earliest_call_ms(burst, calls) + max_wait_ms:
            break
        calls += 1
    return calls


def calls_available(
    state_dir: Path,
    api_key: str,
    *,
    per_second: int,
    per_minute: int,
    per_day: int,
    postgres_url: str | None = None,
) -> int | None:
    """Calls a run started now can make under the daily quota, or ``None`` when there is none.

    Yesterday's calls made at this time count as available: they leave the window while the run
    makes its own (see ``runnable_calls``).
    """
    if per_day <= 0:
        return None
    day = day_rate(per_day)
    stamps, at = BucketStore(state_dir, postgres_url).window_stamps(api_key, day)
    burst = burst_rates(per_second, per_minute)
    return runnable_calls(stamps, day, burst, at, int(DAY_MAX_WAIT_SECONDS * 1000))


class SharedRateLimiter:
    """Blocking permits for one API key, shared through files under the data home (or Postgres)."""

    def __init__(
        self,
        state_dir: Path,
        api_key: str,
        *,
        per_second: int,
        per_minute: int,
        per_day: int,
        max_wait_seconds: float = 300.0,
        day_max_wait_seconds: float = DAY_MAX_WAIT_SECONDS,
        postgres_url: str | None = None,
    ) -> None:
        self._store = BucketStore(state_dir, postgres_url)
        self._api_key = api_key
        self._burst_rates = effective_rates(burst_rates(per_second, per_minute))
        self._day_rate = day_rate(per_day) if per_day > 0 else None
        self._max_wait = max_wait_seconds
        self._day_max_wait = day_max_wait_seconds
        self._lock = threading.Lock()
        self._burst: Limiter | None = None
        self._day: SyncBucket | None = None
        self._now: Callable[[], int] = now_ms

    def _open(self) -> None:
        with self._lock:
            if self._day_rate is not None and self._day is None:
                day = self._store.open(self._api_key, DAY_BUCKET, [self._day_rate])
                self._day, self._now = synchronous(day), self._store.clock(day)
                self._day.leak(self._now())  # nothing else drops old day permits: no Limiter does
            if self._burst_rates and self._burst is None:
                bucket = self._store.open(self._api_key, BURST_BUCKET, self._burst_rates)
                self._burst = Limiter(bucket, buffer_ms=50)

    def acquire(self, symbol: str) -> None:
        """Wait for a permit; raise if the day's quota does not free up soon enough."""
        self._open()
        deadline = time.monotonic() + self._day_max_wait
        while True:
            if self._day is not None and self._day_rate is not None:
                wait_ms = day_wait_ms(self._day, self._day_rate, self._now())
                if wait_ms / 1000 > deadline - time.monotonic():
                    raise self._quota_error(symbol, self._day_rate.limit, wait_ms)
                time.sleep(wait_ms / 1000)
            if self._burst is not None and not self._burst.try_acquire(
                symbol, blocking=True, timeout=self._max_wait
            ):
                raise RateLimitedError(
                    f"{symbol}: no Alpha Vantage permit within {self._max_wait:.0f}s; other "
                    "processes are using the key's per-second/per-minute budget"
                )
            if self._put_day(symbol):
                return

    def _put_day(self, symbol: str) -> bool:
        """The day permit, through the bucket's own put (atomic, never waiting on the window).

        False when another process took the room meanwhile. PostgreSQL's bucket also refuses
        while another session holds its table (it locks with NOWAIT); with room still in the
        window that refusal is only contention, so the put is tried again with the burst permit
        already held rather than spending another.
        """
        if self._day is None or self._day_rate is None:
            return True
        for _ in range(DAY_PUT_ATTEMPTS):
            if self._day.put(RateItem(symbol, self._now())):
                return True
            if day_wait_ms(self._day, self._day_rate, self._now()) > 0:
                return False
            time.sleep(DAY_PUT_RETRY_SECONDS)
        return False

    def close(self) -> None:
        """Let go of the buckets: their connections (a pool each in PostgreSQL) and the burst
        limiter's leak thread. A later ``acquire`` opens them again."""
        with self._lock:
            if self._burst is not None:
                self._burst.close()
            if self._day is not None:
                self._day.close()
            self._day, self._burst = None, None

    @staticmethod
    def _quota_error(symbol: str, per_day: int, wait_ms: int) -> DailyQuotaError:
        free_at = dt.datetime.now().astimezone() + dt.timedelta(milliseconds=wait_ms)
        return DailyQuotaError(
            f"{symbol}: the configured daily limit (ALPHAVANTAGE_REQUESTS_PER_DAY={per_day}, "
            "over any 24 hours) is used up; retry after the quota resets: the next call is "
            f"free at {free_at:%Y-%m-%d %H:%M %Z}"
        )
