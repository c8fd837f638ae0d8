"""Per-key rate limits: a fixed window, counted in this process only (one replica, one
worker), with the IETF ``RateLimit-Policy`` / ``RateLimit`` fields
(draft-ietf-httpapi-ratelimit-headers: ``"default";q=600;w=60`` and ``"default";r=12;t=30``)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from market_api.settings import Quota

POLICY = "default"


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    remaining: int
    reset_seconds: int
    """Seconds until the window ends and the count starts again."""


class FixedWindow:
    """Windows aligned on the epoch, so ``t`` is the same for every caller; the counts are
    dropped when a window ends, which bounds the memory to the callers of one window."""

    def __init__(self, quota: Quota) -> None:
        self.quota = quota
        self.policy = f'"{POLICY}";q={quota.requests};w={quota.seconds}'.encode()
        self._window = -1
        self._counts: dict[str, int] = {}

    def take(self, who: str, now: float | None = None) -> Verdict:
        now = time.time() if now is None else now
        window = int(now // self.quota.seconds)
        if window != self._window:
            self._window, self._counts = window, {}
        used = self._counts.get(who, 0) + 1
        if used <= self.quota.requests:
            self._counts[who] = used
        reset = max(1, math.ceil((window + 1) * self.quota.seconds - now))
        return Verdict(used <= self.quota.requests, max(0, self.quota.requests - used), reset)

    def headers(self, verdict: Verdict) -> list[tuple[bytes, bytes]]:
        state = f'"{POLICY}";r={verdict.remaining};t={verdict.reset_seconds}'.encode()
        return [(b"ratelimit-policy", self.policy), (b"ratelimit", state)]
