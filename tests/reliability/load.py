"""A bounded HTTP load on the served API: many keep-alive connections, varied questions.

Questions are drawn at random (seeded) over every endpoint, interval, range, limit and both
formats, so most are distinct and the cache must evict. Besides counting statuses, every daily
JSON answer for a symbol the writer loop rewrites (L000..L099) is checked for a torn read: all
its bars must come from one generation (one volume), and a whole series must hold exactly that
generation's number of bars (``writer_process.days_in``).
"""

from __future__ import annotations

import datetime as dt
import math
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlencode

import requests

from tests.reliability import api_data
from tests.reliability.writer_process import FIRST_DAY, SYMBOLS, days_in

LOOP_SYMBOLS = tuple(f"L{i:03d}" for i in range(SYMBOLS))


@dataclass
class Tally:
    statuses: Counter[int] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)  # no HTTP answer at all
    torn: list[str] = field(default_factory=list)
    distinct: dict[tuple[str, str, str], int] = field(default_factory=dict)  # url, accept, etag
    distinct_bytes: int = 0
    """What a cache that never evicts would have held: every distinct answer's body."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def requests(self) -> int:
        return sum(self.statuses.values()) + sum(self.failures.values())


def _day(first: dt.date, span: int, rng: random.Random) -> str:
    return (first + dt.timedelta(days=rng.randrange(span))).isoformat()


def question(rng: random.Random) -> tuple[str, dict[str, str], bool]:
    """A URL, its headers, and whether it asks for a whole daily JSON series."""
    roll = rng.random()
    if roll < 0.05:
        return rng.choice(("/health", "/instruments")), {}, False
    loop = roll < 0.7
    symbol = rng.choice(LOOP_SYMBOLS if loop else api_data.SYMBOLS)
    first, span = (FIRST_DAY.date(), 2_000) if loop else (api_data.FIRST_DAY, api_data.DAYS)
    params: dict[str, str] = {}
    if rng.random() < 0.6:
        params["start"] = _day(first, span // 2, rng)
    if rng.random() < 0.6:
        params["end"] = _day(first + dt.timedelta(days=span // 2), span // 2, rng)
    if rng.random() < 0.15:
        return f"/instruments/{symbol}/stats?{urlencode(params)}", {}, False
    params["interval"] = rng.choice(("1d", "1d", "1w", "1mo"))
    if rng.random() < 0.3:
        params["limit"] = str(rng.randint(1, 3_000))
    headers = {"Accept": "text/csv"} if rng.random() < 0.2 else {}
    whole = loop and params == {"interval": "1d"} and not headers
    return f"/instruments/{symbol}/ohlcv?{urlencode(params)}", headers, whole


def _check_generation(url: str, body: dict[str, object], whole: bool, tally: Tally) -> None:
    bars = body.get("bars")
    if not isinstance(bars, list) or not bars or not url.startswith("/instruments/L"):
        return
    volumes = {bar["volume"] for bar in bars}
    if len(volumes) > 1:
        tally.torn.append(f"{url}: bars of generations {sorted(volumes)} in one answer")
    elif whole and len(bars) != days_in(volumes.pop()):
        tally.torn.append(f"{url}: {len(bars)} bars, not one whole generation")


def _connection(base: str, deadline: float, seed: int, tally: Tally, enough: float) -> None:
    rng = random.Random(seed)
    session = requests.Session()
    while time.monotonic() < deadline and tally.distinct_bytes < enough:
        url, headers, whole = question(rng)
        try:
            response = session.get(base + url, headers=headers, timeout=60)
        except requests.RequestException as exc:
            with tally.lock:
                tally.failures[type(exc).__name__] += 1
            session = requests.Session()
            continue
        with tally.lock:
            tally.statuses[response.status_code] += 1
            if response.status_code == 200:
                key = (url, headers.get("Accept", ""), response.headers.get("etag", ""))
                if key not in tally.distinct:
                    tally.distinct[key] = len(response.content)
                    tally.distinct_bytes += len(response.content)
        if response.status_code == 200 and not headers and "interval=1d" in url:
            _check_generation(url, response.json(), whole, tally)


def hammer(
    base: str, seconds: float, connections: int, seed: int, until_distinct_bytes: float = math.inf
) -> Tally:
    """``connections`` clients asking questions back to back for ``seconds``, or until their
    distinct answers add up to ``until_distinct_bytes``: a goal in bytes, not seconds, keeps a
    test that needs that much data meaningful on a slower machine."""
    tally = Tally()
    deadline = time.monotonic() + seconds
    args = [(base, deadline, seed + i, tally, until_distinct_bytes) for i in range(connections)]
    threads = [threading.Thread(target=_connection, args=a) for a in args]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 120)
    return tally
