"""One Alpha Vantage quota shared by every process that uses the key.

Parallel steps, concurrent runs and a backfill beside the schedule all take permits from the same
SQLite-backed pyrate-limiter buckets in the data home, guarded by a file lock, so a key's limits
hold across processes. Two buckets, because they fail differently:

* the burst bucket (per second, per minute) is waited on: a permit comes within seconds;
* the daily bucket is only tried: waiting for it could block a step for hours, so an empty day
  fails the symbol at once with a message that says when to retry.

The daily window is a rolling 24 hours, slightly stricter than Alpha Vantage's reset at midnight
US/Eastern.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import sqlite3
import threading
import time
from pathlib import Path

from pyrate_limiter import Duration, Limiter, Rate, SQLiteBucket

from market_pipeline.resources.av_errors import DailyQuotaError, RateLimitedError

DAY_PROBE_SECONDS = 2.0
DAY_BUCKET = "day"


def widened(limit: int, interval: Duration) -> Rate:
    """A rate whose window is a little longer than the vendor's.

    A permit is taken a few milliseconds before the request reaches Alpha Vantage, and that
    delay varies (connection set-up, scheduling); a 10 % longer window (at most 2 s) keeps
    the arrivals, not just the permits, within the limit.
    """
    interval_ms = int(interval.value)
    return Rate(limit, interval_ms + min(2000, interval_ms // 10))


def day_rate(per_day: int) -> Rate:
    return widened(per_day, Duration.DAY)


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


class SharedRateLimiter:
    """Blocking permits for one API key, shared through a file under the data home."""

    def __init__(
        self,
        state_dir: Path,
        api_key: str,
        *,
        per_second: int,
        per_minute: int,
        per_day: int,
        max_wait_seconds: float = 300.0,
    ) -> None:
        self._state_dir = state_dir
        self._table = bucket_table(api_key)
        self._burst_rates = effective_rates(
            [
                widened(limit, interval)
                for limit, interval in (
                    (per_second, Duration.SECOND),
                    (per_minute, Duration.MINUTE),
                )
                if limit > 0
            ]
        )
        self._day_rates = [day_rate(per_day)] if per_day > 0 else []
        self._max_wait = max_wait_seconds
        self._lock = threading.Lock()
        self._burst: Limiter | None = None
        self._day: Limiter | None = None

    def _limiter(self, name: str, rates: list[Rate]) -> Limiter:
        self._state_dir.mkdir(parents=True, exist_ok=True)
        bucket = SQLiteBucket.init_from_file(
            rates,
            table=self._table,
            db_path=str(bucket_path(self._state_dir, name)),
            use_file_lock=True,
        )
        return Limiter(bucket, buffer_ms=50)

    def acquire(self, symbol: str) -> None:
        """Wait for a permit; raise if the day is used up or the wait would be too long."""
        with self._lock:
            if self._day_rates and self._day is None:
                self._day = self._limiter(DAY_BUCKET, self._day_rates)
            if self._burst_rates and self._burst is None:
                self._burst = self._limiter("burst", self._burst_rates)
        if self._day is not None and not self._day.try_acquire(
            symbol, blocking=True, timeout=DAY_PROBE_SECONDS
        ):
            raise DailyQuotaError(
                f"{symbol}: the configured daily limit (ALPHAVANTAGE_REQUESTS_PER_DAY="
                f"{self._day_rates[0].limit}) is used up; retry after the quota resets"
            )
        if self._burst is not None and not self._burst.try_acquire(
            symbol, blocking=True, timeout=self._max_wait
        ):
            raise RateLimitedError(
                f"{symbol}: no Alpha Vantage permit within {self._max_wait:.0f}s; other "
                "processes are using the key's per-second/per-minute budget"
            )


def calls_used_today(state_dir: Path, api_key: str, per_day: int) -> int:
    """Permits the key's daily bucket has handed out in its current (rolling) window.

    Read-only and lock-free: the schedule asks this to size its request to the calls left, and
    a count that is a moment stale is harmless there (the limiter itself still enforces the
    quota). A missing file or table means no call was made yet.
    """
    if per_day <= 0:
        return 0
    path = bucket_path(state_dir, DAY_BUCKET)
    if not path.exists():
        return 0
    since_ms = time.time_ns() // 1_000_000 - day_rate(per_day).interval
    query = f"SELECT count(*) FROM '{bucket_table(api_key)}' WHERE item_timestamp >= ?"
    try:
        with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as conn:
            return int(conn.execute(query, (since_ms,)).fetchone()[0])
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return 0
        raise
