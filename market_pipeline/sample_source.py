"""An offline Alpha Vantage: deterministic daily bars in the vendor's exact wire format.

With no API key the client mounts ``SampleAdapter`` on its requests session, so the sample goes
through the same HTTP client, error classification, parsing and validation as the real API. Every
symbol gets its own reproducible series (seeded by the symbol): NYSE trading days only, valid OHLC,
plausible volumes, one 4:1 split-like drop and three bad rows (high below low, an empty close, a
zero open) inside the latest 100 bars, so that validation has something to show.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import random
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qs, urlsplit

import holidays
import requests
from requests.adapters import BaseAdapter

# A reserved, never-resolving host (RFC 2606): only the mounted adapter can answer it.
SAMPLE_BASE_URL = "http://alphavantage.sample.invalid/query"
FIRST_DAY = dt.date(2019, 1, 2)
LAST_DAY = dt.date(2024, 12, 31)
COMPACT_BARS = 100


@lru_cache(maxsize=1)
def trading_days() -> tuple[dt.date, ...]:
    closed = holidays.financial_holidays("NYSE", years=range(FIRST_DAY.year, LAST_DAY.year + 1))
    days = []
    day = FIRST_DAY
    while day <= LAST_DAY:
        if day.weekday() < 5 and day not in closed:
            days.append(day)
        day += dt.timedelta(days=1)
    return tuple(days)


def _rng(symbol: str) -> random.Random:
    return random.Random(int.from_bytes(hashlib.sha256(symbol.encode()).digest()[:8], "big"))


@lru_cache(maxsize=2048)
def daily_bars(symbol: str) -> tuple[tuple[str, dict[str, str]], ...]:
    """Every bar of ``symbol``, oldest first, values formatted as Alpha Vantage sends them."""
    rng = _rng(symbol)
    days = trading_days()
    n = len(days)
    split_at = n - rng.randint(20, 70)
    bad = dict.fromkeys(rng.sample(range(n - COMPACT_BARS, n), 3))
    kinds = iter(("high_below_low", "empty_close", "zero_open"))
    bad = {i: next(kinds) for i in bad}
    close = rng.uniform(20, 400)
    base_volume = rng.uniform(1e6, 4e7)
    bars = []
    for i, day in enumerate(days):
        if i == split_at:
            close /= 4
        open_ = close * math.exp(rng.gauss(0, 0.004))
        close = open_ * math.exp(rng.gauss(0.0003, 0.015))
        high = max(open_, close) * (1 + abs(rng.gauss(0, 0.006)))
        low = min(open_, close) * (1 - abs(rng.gauss(0, 0.006)))
        volume = int(base_volume * math.exp(rng.gauss(0, 0.3)))
        values = {
            "1. open": f"{open_:.4f}",
            "2. high": f"{high:.4f}",
            "3. low": f"{low:.4f}",
            "4. close": f"{close:.4f}",
            "5. volume": str(volume),
        }
        kind = bad.get(i)
        if kind == "high_below_low":
            values["2. high"], values["3. low"] = values["3. low"], values["2. high"]
        elif kind == "empty_close":
            values["4. close"] = ""
        elif kind == "zero_open":
            values["1. open"] = "0.0000"
        bars.append((day.isoformat(), values))
    return tuple(bars)


def daily_payload(symbol: str, outputsize: str) -> dict[str, Any]:
    """The JSON object Alpha Vantage returns for TIME_SERIES_DAILY, newest bar first."""
    bars = daily_bars(symbol)
    if outputsize != "full":
        bars = bars[-COMPACT_BARS:]
    return {
        "Meta Data": {
            "1. Information": "Daily Prices (open, high, low, close) and Volumes",
            "2. Symbol": symbol,
            "3. Last Refreshed": bars[-1][0],
            "4. Output Size": "Full size" if outputsize == "full" else "Compact",
            "5. Time Zone": "US/Eastern",
        },
        "Time Series (Daily)": dict(reversed(bars)),
    }


def answer(query: dict[str, str]) -> dict[str, Any]:
    """What Alpha Vantage would answer for a query string (the parts the pipeline uses)."""
    if query.get("function") != "TIME_SERIES_DAILY" or not query.get("symbol"):
        return {"Error Message": "Invalid API call. Please retry or visit the documentation."}
    return daily_payload(query["symbol"].upper(), query.get("outputsize", "compact"))


class SampleAdapter(BaseAdapter):
    """A requests transport that answers from the sample instead of the network."""

    def send(  # type: ignore[override]
        self, request: requests.PreparedRequest, **kwargs: Any
    ) -> requests.Response:
        query = {k: v[-1] for k, v in parse_qs(urlsplit(request.url or "").query).items()}
        response = requests.Response()
        response.status_code = 200
        response.headers["Content-Type"] = "application/json"
        response._content = json.dumps(answer(query)).encode()
        response.encoding = "utf-8"
        response.url = request.url or ""
        response.request = request
        return response

    def close(self) -> None:
        """Nothing to release."""
