"""Hostile requests for the API, and what each answer may be.

A probe is a URL (plus headers) and a verdict rule: injections (quotes, ``;``, ``--``, NUL,
LIKE and regex wildcards, very long values, non-ASCII that ``str.upper()`` turns into another
ticker) must get a 4xx; harmless oddities (an extra ``symbol=`` parameter, a trailing newline)
may get a 200, but only with the data of the symbol in the path. Nothing may get a 5xx, and an
error body never carries bars. Runs against a TestClient and against the served app alike.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from tests.reliability.api_data import owners

LONG = 10_000
SQL_TAILS = ("'", "' OR '1'='1", "'--", ";", "; DROP TABLE ohlcv_data; --", "--", "\x00", '"', ")")
# What str.upper() turns into a ticker: dotless i, sharp s, long s, the ff ligature.
UPPER_TRAPS = ("\u0131bm", "\u00dfpy", "\u017f", "\ufb00")
FULLWIDTH_AAPL = "\uff21\uff21\uff30\uff2c"
FULLWIDTH_DATE = "\uff12\uff10\uff12\uff13-\uff10\uff13-\uff10\uff11"
OTHER_UNICODE = (
    "AAPL\u200b",
    "A\u0301APL",
    "AAPL\U0001f600",
    "\u0399",
)  # ZWSP, accent, emoji, iota
PATH_INJECTIONS = (
    *(f"AAPL{tail}" for tail in SQL_TAILS),
    "\x00AAPL", "AAP%", "AAP_", "BRK_B", "BRK%", "BRK.*", ".*", "%", "_", "*", "AAPL\\",
    "AAPL/../IBM", "..", "A" * 13, "A" * LONG, *UPPER_TRAPS, FULLWIDTH_AAPL, *OTHER_UNICODE,
)  # fmt: skip
PATH_ODDITIES = {"aapl": "AAPL", "AAPL\n": "AAPL", " BRK.B ": "BRK.B", "brk-b": "BRK-B"}
DATE_INJECTIONS = (
    *(f"2023-03-01{tail}" for tail in SQL_TAILS),
    "' OR 1=1 --", "1" * LONG, FULLWIDTH_DATE, "2023-02-30", "2023-13-01", "-1",
)  # fmt: skip
QUERY_INJECTIONS: dict[str, tuple[str, ...]] = {
    "start": DATE_INJECTIONS,
    "end": DATE_INJECTIONS,
    "interval": (*(f"1d{tail}" for tail in SQL_TAILS), "1w OR 1=1", "x" * LONG, "\uff11d", "%"),
    "limit": (*(f"5{tail}" for tail in SQL_TAILS), "-1", "0", "1e9", "9" * LONG, "5 OR 1=1",
              "0x10", "\uff15"),
    "adjustment": (*(f"all{tail}" for tail in SQL_TAILS), "ALL", "", "raw,all", "all OR 1=1",
                   "x" * LONG, "\uff41ll", "%", "spin-off"),
}  # fmt: skip
WITH_STATS = ("start", "end", "adjustment")
REPEATED = ("adjustment=raw&adjustment=all", "adjustment=all&adjustment=all")
QUERY_ODDITIES = ("symbol=IBM", "symbol=IBM&symbol=SPY", "foo=bar'--", "SYMBOL=AAP%25",
                  "adjustment=all&interval=1w", "ADJUSTMENT=bogus")  # fmt: skip
HEADER_ODDITIES = (
    {"Accept": "text/csv'; DROP TABLE ohlcv_data; --"},
    {"Accept": "text/csv;q=1e999, application/json;q=nan"},
    {"If-None-Match": "\"x\"' OR '1'='1, W/" + '"y"' * 500},
    {"If-None-Match": "*"},
)


@dataclass(frozen=True)
class Probe:
    url: str
    symbol: str | None  # None: the answer must be a 4xx; else a 2xx/3xx may hold only its data
    headers: dict[str, str] = field(default_factory=dict)


def _q(value: str) -> str:
    return quote(value, safe="")


def probes() -> Iterator[Probe]:
    for symbol in PATH_INJECTIONS:
        for route in ("ohlcv", "stats", "corporate-actions"):
            yield Probe(f"/instruments/{_q(symbol)}/{route}", None)
    for symbol, meant in PATH_ODDITIES.items():
        yield Probe(f"/instruments/{_q(symbol)}/ohlcv", meant)
    for name, values in QUERY_INJECTIONS.items():
        routes = ("ohlcv", "stats") if name in WITH_STATS else ("ohlcv",)
        for value in values:
            for route in routes:
                yield Probe(f"/instruments/AAPL/{route}?{name}={_q(value)}", None)
    for query in REPEATED:
        for route in ("ohlcv", "stats"):
            yield Probe(f"/instruments/AAPL/{route}?{query}", None)
    for query in QUERY_ODDITIES:
        yield Probe(f"/instruments/AAPL/ohlcv?{query}", "AAPL")
    for headers in HEADER_ODDITIES:
        yield Probe("/instruments/AAPL/ohlcv?interval=1w", "AAPL", headers)


def _prices(content_type: str, body: bytes) -> list[float]:
    """Every price in a bars or stats answer, JSON or CSV."""
    if content_type.startswith("text/csv"):
        rows = list(csv.DictReader(io.StringIO(body.decode())))
        return [float(r[k]) for r in rows for k in ("open", "high", "low", "close")]
    data: dict[str, Any] = json.loads(body)
    if "bars" in data:
        return [b[k] for b in data["bars"] for k in ("open", "high", "low", "close")]
    return [data[k] for k in ("average_close", "min_low", "max_high") if data.get(k) is not None]


def verdict(probe: Probe, status: int, content_type: str, body: bytes) -> list[str]:
    """What is wrong with this answer to this probe (nothing: an empty list)."""
    where = f"{probe.url[:120]} {probe.headers or ''} -> {status}"
    if status >= 500:
        return [f"{where}: server error {body[:200]!r}"]
    if status >= 400:
        return [f"{where}: an error body with bars"] if b'"bars"' in body else []
    if probe.symbol is None:
        return [f"{where}: an injection was answered, not rejected"]
    if status == 200 and not owners(_prices(content_type, body)) <= {probe.symbol}:
        return [f"{where}: data of {owners(_prices(content_type, body))}, asked {probe.symbol}"]
    return []
