"""An offline Alpha Vantage in the vendor's exact wire format, mounted on the client's session
when there is no key, so the sample takes the real client's whole path. What it answers (daily,
actions, intraday): docs/design/pipeline-internals.md.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import math
import random
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qs, urlsplit

import holidays
import requests
from requests.adapters import BaseAdapter

from market_core.exchange import EXCHANGE_TZ
from market_core.schema import INTRADAY_INTERVALS
from market_core.sessions import Session, exchange_time, previous_session, session

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


def _split_index(rng: random.Random, n: int) -> int:
    """The index of the first bar after the 4:1 split: the first draw of the symbol's series."""
    return n - rng.randint(20, 70)


@lru_cache(maxsize=2048)
def daily_bars(symbol: str) -> tuple[tuple[str, dict[str, str]], ...]:
    """Every bar of ``symbol``, oldest first, values formatted as Alpha Vantage sends them."""
    rng = _rng(symbol)
    days = trading_days()
    n = len(days)
    split_at = _split_index(rng, n)
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


SPLIT_FACTOR = "4.0000"


def split_date(symbol: str) -> dt.date:
    """The ex-date of the sample's split: the first bar at a quarter of the price before."""
    days = trading_days()
    return days[_split_index(_rng(symbol), len(days))]


def splits_payload(symbol: str) -> dict[str, Any]:
    """The JSON object Alpha Vantage returns for SPLITS."""
    data = [{"effective_date": split_date(symbol).isoformat(), "split_factor": SPLIT_FACTOR}]
    return {"symbol": symbol, "data": data}


@lru_cache(maxsize=16)
def _nyse_closed(year: int) -> frozenset[dt.date]:
    return frozenset(holidays.financial_holidays("NYSE", years=[year, year + 1]))


def _trading_day_on_or_after(day: dt.date) -> dt.date:
    while day.weekday() >= 5 or day in _nyse_closed(day.year):
        day += dt.timedelta(days=1)
    return day


def _business_days_from(day: dt.date, count: int) -> dt.date:
    step = 1 if count >= 0 else -1
    for _ in range(abs(count)):
        day += dt.timedelta(days=step)
        while day.weekday() >= 5:
            day += dt.timedelta(days=step)
    return day


UNRECORDED_DIVIDENDS = 3
"""The oldest dividends carry ``"None"`` for the declaration, record and payment dates."""


@lru_cache(maxsize=2048)
def dividend_rows(symbol: str) -> tuple[dict[str, str], ...]:
    """Quarterly dividends of ``symbol``, newest first, values as Alpha Vantage sends them.

    Each year pays a steady share of its first close (a quarter of it once the split is past),
    so the dividend factors are plausible; the newest is declared for a day after the sample's
    last bar. A random stream of its own leaves the bars as they were.
    """
    rng = random.Random(f"{symbol}/dividends")
    quarterly_yield = rng.uniform(0.002, 0.008)
    day_of_month = rng.randint(5, 20)
    first_bars: dict[int, tuple[dt.date, float]] = {}
    for date, values in daily_bars(symbol):
        day = dt.date.fromisoformat(date)
        if values["4. close"] and day.year not in first_bars:
            first_bars[day.year] = (day, float(values["4. close"]))
    split = split_date(symbol)
    rows = []
    for year in range(FIRST_DAY.year, LAST_DAY.year + 2):
        reference_day, reference_close = first_bars[min(year, LAST_DAY.year)]
        for month in (2, 5, 8, 11):
            ex = _trading_day_on_or_after(dt.date(year, month, day_of_month))
            if ex == split:
                ex = _trading_day_on_or_after(ex + dt.timedelta(days=1))
            amount = reference_close * quarterly_yield
            if reference_day < split <= ex:
                amount /= 4
            rows.append({
                "ex_dividend_date": ex.isoformat(),
                "declaration_date": _business_days_from(ex, -15).isoformat(),
                "record_date": _business_days_from(ex, 0 if ex.year >= 2024 else 1).isoformat(),
                "payment_date": _business_days_from(ex, 10).isoformat(),
                "amount": f"{max(amount, 0.01):.2f}",
            })  # fmt: skip
            if ex > LAST_DAY:
                break
    for row in rows[:UNRECORDED_DIVIDENDS]:
        row.update(declaration_date="None", record_date="None", payment_date="None")
    return tuple(reversed(rows))


def dividends_payload(symbol: str) -> dict[str, Any]:
    """The JSON object Alpha Vantage returns for DIVIDENDS."""
    return {"symbol": symbol, "data": [dict(row) for row in dividend_rows(symbol)]}


INTRADAY_FULL_SESSIONS = 5


def intraday_sessions(now: dt.datetime, count: int, *, extended: bool) -> list[Session]:
    """The last ``count`` sessions begun by ``now`` (naive, New York), oldest first."""
    today = session(now.date(), extended=extended)
    found = [today] if today is not None and today.opens <= now else []
    before = now.date()
    while len(found) < count:
        earlier = previous_session(before, extended=extended)
        found.insert(0, earlier)
        before = earlier.day
    return found


def _session_bars(
    symbol: str, interval: str, day: Session, until: dt.datetime
) -> list[tuple[str, dict[str, str]]]:
    minutes = int(interval.removesuffix("min"))
    step = dt.timedelta(minutes=minutes)
    rng = random.Random(f"{symbol}/{interval}/{day.day.isoformat()}")
    close = _rng(symbol).uniform(20, 400) * math.exp(rng.gauss(0, 0.05))
    base_volume = rng.uniform(1e4, 4e5) * minutes
    bars = []
    start = day.opens
    while start < day.closes and start + step <= until:
        open_ = close * math.exp(rng.gauss(0, 0.0005))
        close = open_ * math.exp(rng.gauss(0, 0.002))
        high = max(open_, close) * (1 + abs(rng.gauss(0, 0.001)))
        low = min(open_, close) * (1 - abs(rng.gauss(0, 0.001)))
        bars.append((start.strftime("%Y-%m-%d %H:%M:%S"), {
            "1. open": f"{open_:.4f}", "2. high": f"{high:.4f}", "3. low": f"{low:.4f}",
            "4. close": f"{close:.4f}", "5. volume": str(int(base_volume * rng.uniform(0.5, 2))),
        }))  # fmt: skip
        start += step
    return bars


def intraday_bars(
    symbol: str, interval: str, *, extended: bool, outputsize: str, now: dt.datetime
) -> list[tuple[str, dict[str, str]]]:
    """The bars an intraday answer at ``now`` (naive, New York) carries, oldest first."""
    count = INTRADAY_FULL_SESSIONS if outputsize == "full" else 2
    bars = [
        bar
        for day in intraday_sessions(now, count, extended=extended)
        for bar in _session_bars(symbol, interval, day, now)
    ]
    return bars if outputsize == "full" else bars[-COMPACT_BARS:]


def intraday_payload_from_bars(
    symbol: str, interval: str, outputsize: str, bars: list[tuple[str, dict[str, Any]]]
) -> dict[str, Any]:
    """The JSON object Alpha Vantage returns for TIME_SERIES_INTRADAY, newest bar first."""
    return {
        "Meta Data": {
            "1. Information": f"Intraday ({interval}) open, high, low, close prices and volume",
            "2. Symbol": symbol,
            "3. Last Refreshed": bars[-1][0] if bars else "",
            "4. Interval": interval,
            "5. Output Size": "Full size" if outputsize == "full" else "Compact",
            "6. Time Zone": "US/Eastern",
        },
        f"Time Series ({interval})": dict(reversed(bars)),
    }


def intraday_payload(
    symbol: str,
    interval: str,
    *,
    extended: bool = False,
    outputsize: str = "compact",
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """The sample's TIME_SERIES_INTRADAY answer at ``now`` (default: the clock)."""
    moment = exchange_time(now or dt.datetime.now(EXCHANGE_TZ))
    bars = intraday_bars(symbol, interval, extended=extended, outputsize=outputsize, now=moment)
    return intraday_payload_from_bars(symbol, interval, outputsize, bars)


LISTING_HEADER = "symbol,name,exchange,assetType,ipoDate,delistingDate,status"
LISTINGS: dict[str, tuple[tuple[str, ...], ...]] = {
    "active": (
        ("A", "Agilent Technologies Inc", "NYSE", "Stock", "1999-11-18", "null", "Active"),
        ("AAC", "Ares Acquisition Corporation - Class A", "NYSE", "Stock", "2021-03-25", "null",
         "Active"),
        ("AAC-U", "Ares Acquisition Corporation - Units (1 Ord Share Class A & 1/5 War)", "NYSE",
         "Stock", "2021-02-02", "null", "Active"),
        ("AAPL", "Apple Inc", "NASDAQ", "Stock", "1980-12-12", "null", "Active"),
        ("AMZN", "Amazon.com Inc", "NASDAQ", "Stock", "1997-05-15", "null", "Active"),
        ("BRK-B", "Berkshire Hathaway Inc - Class B", "NYSE", "Stock", "1996-05-09", "null",
         "Active"),
        ("GOOGL", "Alphabet Inc - Class A", "NASDAQ", "Stock", "2004-08-19", "null", "Active"),
        ("IBM", "International Business Machines Corp", "NYSE", "Stock", "1962-01-02", "null",
         "Active"),
        ("IMO", "Imperial Oil Ltd", "NYSE MKT", "Stock", "1980-03-17", "null", "Active"),
        ("MSFT", "Microsoft Corporation", "NASDAQ", "Stock", "1986-03-13", "null", "Active"),
        ("NEE", "NextEra Energy Inc", "NYSE", "Stock", "1980-03-17", "null", "Active"),
        ("NEE 6.219", "NextEra Energy Inc - 6.219% Corporate Units", "NYSE", "Stock",
         "2022-09-16", "null", "Active"),
        ("NVDA", "NVIDIA Corp", "NASDAQ", "Stock", "1999-01-22", "null", "Active"),
        ("QQQ", "Invesco QQQ Trust Series 1", "NASDAQ", "ETF", "1999-03-10", "null", "Active"),
        ("SO", "Southern Company", "NYSE", "Stock", "1980-03-17", "null", "Active"),
        ("SO 6.75 08-01-22", "Southern Co - 6.75% Equity Units 2019", "NYSE", "Stock",
         "2019-08-05", "null", "Active"),
        ("SPY", "SPDR S&P 500 ETF Trust", "NYSE ARCA", "ETF", "1993-01-29", "null", "Active"),
        ("TSLA", "Tesla Inc", "NASDAQ", "Stock", "2010-06-29", "null", "Active"),
        ("XOM", "Exxon Mobil Corp", "NYSE", "Stock", "1978-01-13", "null", "Active"),
    ),
    "delisted": (
        ("AAC", "AAC Holdings Inc", "NYSE", "Stock", "2014-10-02", "2020-01-14", "Delisted"),
        ("ATVI", "Activision Blizzard Inc", "NASDAQ", "Stock", "1993-10-25", "2023-10-13",
         "Delisted"),
        ("CHNG 6", "Change Healthcare Inc - 6.00% Tangible Equity Units", "NASDAQ", "Stock",
         "2019-06-27", "2022-07-01", "Delisted"),
        ("TWTR", "Twitter Inc", "NYSE", "Stock", "2013-11-07", "2022-11-08", "Delisted"),
        ("XLNX", "Xilinx Inc", "NASDAQ", "Stock", "1990-06-12", "2022-02-14", "Delisted"),
        ("YHOO", "Yahoo Inc", "NASDAQ", "Stock", "1996-04-12", "2017-06-16", "Delisted"),
    ),
}  # fmt: skip
"""The sample's LISTING_STATUS rows, modelled on the vendor's answers (illustrative, not a
copy of one): ``null`` dates, the odd entries that are no ticker (``NEE 6.219``,
``SO 6.75 08-01-22``, ``CHNG 6``), delisted symbols old and recent, and one ticker reused by a
later company (``AAC``: two IPO dates)."""


def listing_csv(state: str) -> str:
    """The CSV Alpha Vantage returns for LISTING_STATUS (``state`` active or delisted):
    a header, then one row per listing, CRLF line ends, fields quoted only where needed."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(LISTING_HEADER.split(","))
    writer.writerows(LISTINGS.get(state, ()))
    return out.getvalue()


def answer(query: dict[str, str]) -> dict[str, Any]:
    """What Alpha Vantage would answer for a query string (the parts the pipeline uses)."""
    function, symbol = query.get("function"), query.get("symbol", "").upper()
    if not symbol:
        return {"Error Message": "Invalid API call. Please retry or visit the documentation."}
    if function == "TIME_SERIES_DAILY":
        return daily_payload(symbol, query.get("outputsize", "compact"))
    if function == "TIME_SERIES_INTRADAY" and query.get("interval") in INTRADAY_INTERVALS:
        return intraday_payload(
            symbol,
            query["interval"],
            extended=query.get("extended_hours", "true").lower() == "true",
            outputsize=query.get("outputsize", "compact"),
        )
    if function == "SPLITS":
        return splits_payload(symbol)
    if function == "DIVIDENDS":
        return dividends_payload(symbol)
    return {"Error Message": "Invalid API call. Please retry or visit the documentation."}


class SampleAdapter(BaseAdapter):
    """A requests transport that answers from the sample instead of the network."""

    def send(  # type: ignore[override]
        self, request: requests.PreparedRequest, **kwargs: Any
    ) -> requests.Response:
        query = {k: v[-1] for k, v in parse_qs(urlsplit(request.url or "").query).items()}
        response = requests.Response()
        response.status_code = 200
        if query.get("function") == "LISTING_STATUS":
            response.headers["Content-Type"] = "application/x-download"
            response._content = listing_csv(query.get("state", "active").lower()).encode()
        else:
            response.headers["Content-Type"] = "application/json"
            response._content = json.dumps(answer(query)).encode()
        response.encoding = "utf-8"
        response.url = request.url or ""
        response.request = request
        return response

    def close(self) -> None:
        """Nothing to release."""
