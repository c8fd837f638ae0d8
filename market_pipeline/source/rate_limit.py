"""One Alpha Vantage quota shared by every process and machine that uses the key: a burst bucket
and a rolling day bucket, in SQLite under the data home or in PostgreSQL when
``MARKET_POSTGRES_URL`` is set. How the two are waited on: docs/design/pipeline-internals.md.

A permit exists only once the store has recorded it, so while PostgreSQL is down no call goes
out (fail closed); a permit waits a bounded time for it to come back (``STORE_WAIT_SECONDS``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

import psycopg
from psycopg import conninfo as pg_conninfo
from psycopg_pool import ConnectionPool, PoolTimeout
from pyrate_limiter import AbstractBucket, Duration, Limiter, Rate, RateItem, SQLiteBucket
from pyrate_limiter.buckets.postgres import PostgresBucket

from market_core.lake import POSTGRES_URL_VAR
from market_core.vendor_usage import CallsToday
from market_pipeline.source.errors import DailyQuotaError, RateLimitedError

log = logging.getLogger(__name__)

DAY_MARGIN_MS = 60_000
DAY_MAX_WAIT_SECONDS = 300.0
DAY_BUCKET, BURST_BUCKET = "day", "burst"
MIN_MARGIN_MS = 500
POSTGRES_CONNECT_SECONDS = 10.0
POSTGRES_CONNECT_TIMEOUT_SECONDS = 5
"""libpq's ``connect_timeout`` (unless the URL sets one): a host that does not answer costs
this, not the kernel's minutes."""
POSTGRES_POOL_SIZE = 4
POSTGRES_POOL_WAIT_SECONDS = 5.0
"""How long a statement waits for one of the pool's connections (psycopg_pool's default is
30 s, which would make every attempt during an outage that long)."""
DAY_PUT_ATTEMPTS = 20
DAY_PUT_RETRY_SECONDS = 0.02
STORE_WAIT_SECONDS = 60.0
"""How long a permit waits for the buckets' PostgreSQL to come back, once reached: a restart
takes seconds, a managed failover tens of seconds. Longer, and the symbol fails with
``LimiterStoreError``. The budget is the outage's, not each symbol's: once it is spent, later
symbols try once and fail, so a run over a long outage ends in bounded time."""
STORE_RETRY_SECONDS = 1.0


class LimiterStoreError(ConnectionError):
    """The PostgreSQL holding the key's buckets (``MARKET_POSTGRES_URL``) could not be reached,
    so no permit was taken and no call made.

    A ``ConnectionError`` (an ``OSError``): the runners fail the symbol alone, as for any
    other transient I/O failure, and ``make retry-failed`` takes it again."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message
        """libpq's or the pool's own words, without the advice around them."""


STORE_ERRORS = (psycopg.OperationalError, LimiterStoreError)
"""What a lost or unreachable store raises (psycopg_pool's ``PoolTimeout`` and ``PoolClosed``
are ``OperationalError`` too): no permit was recorded."""


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
    One plain connection first: a server that is down fails it at once, where the pool would
    keep trying (and logging) for ``POSTGRES_CONNECT_SECONDS``.
    """
    connect_options = _connect_options(url)
    reason = ""
    try:
        psycopg.connect(url, **connect_options).close()
    except psycopg.OperationalError as exc:
        reason = _first_line(url, exc)
    except psycopg.Error:  # a malformed URL: psycopg's message may quote it, password and all
        reason = "not a PostgreSQL URL psycopg understands"
    if reason:
        raise LimiterStoreError(_unreachable(url, reason), reason)
    pool: ConnectionPool[Any] = ConnectionPool(
        url,
        min_size=1,
        max_size=POSTGRES_POOL_SIZE,
        kwargs={"options": "-c timezone=UTC", **connect_options},
        timeout=POSTGRES_POOL_WAIT_SECONDS,
        open=False,
        name=f"ratelimit-{name}",
    )
    try:
        pool.open(wait=True, timeout=POSTGRES_CONNECT_SECONDS)
        return PostgresBucket(pool, f"{bucket_table(api_key)}_{name}", rates)
    except PoolTimeout:
        pool.close()
        reason = f"no connection within {POSTGRES_CONNECT_SECONDS:.0f} s"
        raise LimiterStoreError(_unreachable(url, reason), reason) from None
    except BaseException:
        pool.close()
        raise


def _unreachable(url: str, reason: str) -> str:
    return (
        f"the Alpha Vantage limiter cannot reach PostgreSQL at {_where(url)} ({reason}); "
        "MARKET_POSTGRES_URL holds the key's shared limits: start it or fix the variable"
    )


def _connect_options(url: str) -> dict[str, Any]:
    """``connect_timeout``, unless the URL sets its own."""
    try:
        given = "connect_timeout" in pg_conninfo.conninfo_to_dict(url)
    except Exception:  # psycopg's message would quote the URL; connecting will say it is bad
        given = False
    return {} if given else {"connect_timeout": POSTGRES_CONNECT_TIMEOUT_SECONDS}


def _first_line(url: str, exc: BaseException) -> str:
    """The first line of libpq's message (it names host and port), the URL's password out."""
    lines = str(exc).strip().splitlines()
    line = lines[0] if lines else type(exc).__name__
    with contextlib.suppress(Exception):
        password = pg_conninfo.conninfo_to_dict(url).get("password")
        if password:
            line = line.replace(str(password), "***")
    return line


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
        return functools.partial(postgres_now, cast(PostgresBucket, bucket).pool)

    def window_stamps(self, api_key: str, day: Rate) -> tuple[list[int], int]:
        """The permits in the key's day window ending now, and that now (on the store's clock)."""
        if self.postgres_url is None:
            at = now_ms()
            return window_stamps(self.state_dir, api_key, day, at), at
        return postgres_window_stamps(self.postgres_url, api_key, day)


POSTGRES_NOW_SQL = "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint"


def postgres_now(pool: ConnectionPool[Any]) -> int:
    """The database's clock, in ms; raises when it cannot be read.

    pyrate-limiter's ``PostgresClock`` (the bucket's ``now``) falls back to this machine's clock
    when the query fails, logging a traceback: a permit stamped by another clock than the
    other machines' would count in the wrong window, so the day permits use this one."""
    with pool.connection() as conn:
        row = conn.execute(POSTGRES_NOW_SQL).fetchone()
    if row is None:  # pragma: no cover - a SELECT of one value returns one row
        raise psycopg.OperationalError("the database's clock returned nothing")
    return int(row[0])


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
        at = postgres_now(bucket.pool)
        return permits_in_window(synchronous(bucket), day, at), at
    except psycopg.OperationalError as exc:
        reason = _first_line(url, exc)
        raise LimiterStoreError(_unreachable(url, reason), reason) from None
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


def calls_today(
    state_dir: Path, api_key: str, *, per_day: int, postgres_url: str | None = None
) -> CallsToday | None:
    """The key's permits in its day window now (``market_core.vendor_usage``), or ``None``
    when there is no daily quota."""
    if per_day <= 0:
        return None
    stamps, at = BucketStore(state_dir, postgres_url).window_stamps(api_key, day_rate(per_day))
    return CallsToday(used=len(stamps), limit=per_day, at=at / 1000)


@dataclass(frozen=True)
class _Buckets:
    """The buckets one attempt uses, opened together; ``generation`` tells a stale set."""

    day: SyncBucket | None
    now: Callable[[], int]
    burst: Limiter | None
    generation: int


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
        store_wait_seconds: float = STORE_WAIT_SECONDS,
        store_retry_seconds: float = STORE_RETRY_SECONDS,
    ) -> None:
        self._store = BucketStore(state_dir, postgres_url)
        self._api_key = api_key
        self._burst_rates = effective_rates(burst_rates(per_second, per_minute))
        self._day_rate = day_rate(per_day) if per_day > 0 else None
        self._max_wait = max_wait_seconds
        self._day_max_wait = day_max_wait_seconds
        self._store_wait = store_wait_seconds
        self._store_retry = store_retry_seconds
        self._lock = threading.Lock()
        self._burst: Limiter | None = None
        self._day: SyncBucket | None = None
        self._now: Callable[[], int] = now_ms
        self._generation = 0
        self._reached = False
        """Whether the buckets were ever opened: a store never reached is a wrong URL or a
        server not started, said at once rather than after ``store_wait_seconds``."""
        self._lost_since: float | None = None
        self._lost_attempts = 0

    def _open(self) -> _Buckets:
        with self._lock:
            if self._day_rate is not None and self._day is None:
                day = self._store.open(self._api_key, DAY_BUCKET, [self._day_rate])
                self._day, self._now = synchronous(day), self._store.clock(day)
                self._day.leak(self._now())  # nothing else drops old day permits: no Limiter does
            if self._burst_rates and self._burst is None:
                bucket = self._store.open(self._api_key, BURST_BUCKET, self._burst_rates)
                self._burst = Limiter(bucket, buffer_ms=50)
            self._reached = True
            return _Buckets(self._day, self._now, self._burst, self._generation)

    def acquire(self, symbol: str) -> None:
        """Wait for a permit; raise if the day's quota does not free up soon enough, or if the
        buckets' store (PostgreSQL) cannot be reached for ``store_wait_seconds``.

        While the store is down no permit can be taken, so no call goes out. An attempt that
        failed half-way (the burst permit taken, the day permit not) starts again from the
        beginning on new connections: every call that goes out holds permits taken just before
        it, and a permit whose call was never made only costs room."""
        while True:
            buckets: _Buckets | None = None
            try:
                buckets = self._open()
                self._take(symbol, buckets)
            except STORE_ERRORS as exc:
                self._discard(buckets)
                time.sleep(self._store_lost(symbol, exc))
                continue
            self._store_back()
            return

    def _take(self, symbol: str, buckets: _Buckets) -> None:
        """One attempt at a burst permit and a day permit, in that order."""
        day, now, burst = buckets.day, buckets.now, buckets.burst
        deadline = time.monotonic() + self._day_max_wait
        while True:
            if day is not None and self._day_rate is not None:
                wait_ms = day_wait_ms(day, self._day_rate, now())
                if wait_ms / 1000 > deadline - time.monotonic():
                    raise self._quota_error(symbol, self._day_rate.limit, wait_ms)
                time.sleep(wait_ms / 1000)
            if burst is not None and not burst.try_acquire(
                symbol, blocking=True, timeout=self._max_wait
            ):
                raise RateLimitedError(
                    f"{symbol}: no Alpha Vantage permit within {self._max_wait:.0f}s; other "
                    "processes are using the key's per-second/per-minute budget"
                )
            if self._put_day(symbol, day, now):
                return

    def _put_day(self, symbol: str, day: SyncBucket | None, now: Callable[[], int]) -> bool:
        """The day permit, through the bucket's own put (atomic, never waiting on the window).

        False when another process took the room meanwhile. PostgreSQL's bucket also refuses
        while another session holds its table (it locks with NOWAIT); with room still in the
        window that refusal is only contention, so the put is tried again with the burst permit
        already held rather than spending another.
        """
        if day is None or self._day_rate is None:
            return True
        for _ in range(DAY_PUT_ATTEMPTS):
            if day.put(RateItem(symbol, now())):
                return True
            if day_wait_ms(day, self._day_rate, now()) > 0:
                return False
            time.sleep(DAY_PUT_RETRY_SECONDS)
        return False

    def _store_lost(self, symbol: str, exc: Exception) -> float:
        """How long to wait before trying again; ``LimiterStoreError`` when the wait is over
        (at once for a store never reached: a wrong URL, or a server not started)."""
        url = self._store.postgres_url or ""
        reason = exc.reason if isinstance(exc, LimiterStoreError) else _first_line(url, exc)
        now = time.monotonic()
        with self._lock:
            first = self._reached and self._lost_since is None
            if first:
                self._lost_since = now
            if self._lost_since is not None:
                self._lost_attempts += 1
            lost_for = 0.0 if self._lost_since is None else now - self._lost_since
        left = self._store_wait - lost_for if self._reached else 0.0
        where = _where(url)
        if left <= 0:
            if not self._reached:
                message = f"{symbol}: no call made: {_unreachable(url, reason)}"
            else:
                message = (
                    f"{symbol}: no call made: the Alpha Vantage limiter cannot reach PostgreSQL "
                    f"at {where} for {lost_for:.0f} s ({reason}); transient: make retry-failed "
                    f"loads {symbol} once it is back"
                )
            raise LimiterStoreError(message, reason) from None
        if first:
            log.warning(
                "the Alpha Vantage limiter lost PostgreSQL at %s (%s); permits wait up to %.0f s "
                "for it, and no call goes out meanwhile",
                where,
                reason,
                self._store_wait,
            )
        else:
            log.debug("the Alpha Vantage limiter still cannot reach PostgreSQL: %s", reason)
        return min(self._store_retry, left)

    def _store_back(self) -> None:
        if self._lost_since is None:
            return
        with self._lock:
            since, attempts = self._lost_since, self._lost_attempts
            self._lost_since, self._lost_attempts = None, 0
        if since is not None:
            log.info(
                "the Alpha Vantage limiter reached PostgreSQL again after %.1f s "
                "(%d failed attempts)",
                time.monotonic() - since,
                attempts,
            )

    def _discard(self, buckets: _Buckets | None) -> None:
        """Close the buckets an attempt failed on (None: it failed to open them), unless another
        thread did already: a restarted server leaves a pool's connections dead, and new ones
        are opened next time."""
        with self._lock:
            if buckets is not None and buckets.generation == self._generation:
                self._close()

    def close(self) -> None:
        """Let go of the buckets: their connections (a pool each in PostgreSQL) and the burst
        limiter's leak thread. A later ``acquire`` opens them again."""
        with self._lock:
            self._close()

    def _close(self) -> None:
        for closable in (self._burst, self._day):
            if closable is not None:
                with contextlib.suppress(Exception):  # a pool on a lost server: let it go
                    closable.close()
        self._day, self._burst = None, None
        self._generation += 1

    @staticmethod
    def _quota_error(symbol: str, per_day: int, wait_ms: int) -> DailyQuotaError:
        free_at = dt.datetime.now().astimezone() + dt.timedelta(milliseconds=wait_ms)
        return DailyQuotaError(
            f"{symbol}: the configured daily limit (ALPHAVANTAGE_REQUESTS_PER_DAY={per_day}, "
            "over any 24 hours) is used up; retry after the quota resets: the next call is "
            f"free at {free_at:%Y-%m-%d %H:%M %Z}"
        )
