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

import hashlib
import itertools
import threading
from pathlib import Path

from pyrate_limiter import Duration, Limiter, Rate, SQLiteBucket

from market_pipeline.resources.av_errors import DailyQuotaError, RateLimitedError

DAY_PROBE_SECONDS = 2.0


def widened(limit: int, interval: Duration) -> Rate:
    """A rate whose window is a little longer than the vendor's.

    A permit is taken a few milliseconds before the request reaches Alpha Vantage, and that
    delay varies (connection set-up, scheduling); a 10 % longer window (at most 2 s) keeps
    the arrivals, not just the permits, within the limit.
    """
    interval_ms = int(interval.value)
    return Rate(limit, interval_ms + min(2000, interval_ms // 10))


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
        self._table = f"av_{key_id(api_key)}"
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
        self._day_rates = [widened(per_day, Duration.DAY)] if per_day > 0 else []
        self._max_wait = max_wait_seconds
        self._lock = threading.Lock()
        self._burst: Limiter | None = None
        self._day: Limiter | None = None

    def _limiter(self, name: str, rates: list[Rate]) -> Limiter:
        self._state_dir.mkdir(parents=True, exist_ok=True)
        bucket = SQLiteBucket.init_from_file(
            rates,
            table=self._table,
            db_path=str(self._state_dir / f"ratelimit-{name}.sqlite"),
            use_file_lock=True,
        )
        return Limiter(bucket, buffer_ms=50)

    def acquire(self, symbol: str) -> None:
        """Wait for a permit; raise if the day is used up or the wait would be too long."""
        with self._lock:
            if self._day_rates and self._day is None:
                self._day = self._limiter("day", self._day_rates)
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
