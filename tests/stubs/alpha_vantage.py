"""A local HTTP server that speaks Alpha Vantage's wire format, with scriptable faults.

Tests point ``ALPHAVANTAGE_BASE_URL`` at it. Each symbol answers from a queue of behaviours
(``stub.script("AAPL", "http_503", "ok")``); when its queue is empty it answers ``ok``: the
bundled sample series for that symbol, or the bars set with ``stub.set_bars``. Every request is
recorded (time, symbol, outputsize, apikey) so tests can count them per window.

Behaviours: ``ok``; answers in ``MESSAGES`` (``error_message``, ``invalid_key``,
``note_frequency``, ``info_burst``, ``info_daily`` (echoes the key), ``info_premium``,
``info_demo``, ``empty_object``); ``http_429``/``http_500``/``http_503``; transport faults
(``reset``, ``timeout``, ``cut_body``: the body stops halfway, then the connection closes);
whole-body faults (``html``, ``truncated``, ``empty_series``, ``wrong_symbol``); and row faults
in an otherwise good compact answer (``duplicates``, ``exact_duplicates``, ``non_numeric``,
``empty_values``, ``missing_field``, ``bad_date``, ``future``).

``SPLITS`` and ``DIVIDENDS`` answer from queues of their own, per symbol and function
(``stub.script_actions("AAPL", "SPLITS", "http_503")``), so scripting one never shifts another's
faults; ``ok`` is the sample's events, or the rows set with ``stub.set_actions``. They know every
behaviour above that is not about bars (messages, HTTP statuses, transport faults, ``html``,
``truncated``, ``wrong_symbol``), plus ``empty_data`` (``"data": []``, a symbol without events)
and ``info_premium_endpoint``. Requests record their ``function``; an actions request records
the ``outputsize`` it sent, ``""`` for none.

``TIME_SERIES_INTRADAY`` answers in the vendor's wire format: JSON (``"Meta Data"`` with
``"4. Interval"`` and ``"6. Time Zone"``, then ``"Time Series (5min)"``, newest first), or CSV
(``timestamp,open,high,low,close,volume``) when ``datatype=csv``. Its queue is per symbol
(``stub.script_intraday``); ``ok`` is the sample's bars at the stub's clock, or the bars set
with ``stub.set_intraday``. ``AlphaVantageStub(premium_intraday=False)`` answers every intraday
request as a free key gets it: the "premium endpoint" ``Information``. Requests record their
``interval``, ``extended_hours`` and ``datatype``.

``LISTING_STATUS`` answers CSV as the vendor sends it (a header, ``null`` for no date,
``Active``/``Delisted``, CRLF line ends, ``application/x-download``); errors stay JSON. Its queue
is per state (``stub.script_listings("active", "http_503")``); ``ok`` is the sample's listing,
or the rows set with ``stub.set_listings`` (tuples of the seven fields, written as CSV, or the
body as text). Besides the messages, HTTP statuses, transport faults, ``html`` and ``truncated``
(the body stops inside a row), it knows ``bad_header`` (CSV under other columns),
``header_only`` (no row) and ``empty_dates`` (an empty field for "no date", as some mirrors
send). Requests record their ``state``.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import socket
import threading
import time
from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from market_pipeline.source.sample import (
    LISTING_HEADER,
    daily_payload,
    dividends_payload,
    intraday_payload,
    intraday_payload_from_bars,
    listing_csv,
    splits_payload,
)

MESSAGES = {
    "error_message": {"Error Message": "Invalid API call. Please retry or visit the "
                      "documentation (https://www.alphavantage.co/documentation/) for "
                      "TIME_SERIES_DAILY."},
    "invalid_key": {"Error Message": "the parameter apikey is invalid or missing. Please claim "
                    "your free API key on (https://www.alphavantage.co/support/#api-key)."},
    "note_frequency": {"Note": "Thank you for using Alpha Vantage! Our standard API call "
                       "frequency is 5 calls per minute and 500 calls per day. Please visit "
                       "https://www.alphavantage.co/premium/ if you would like to target a "
                       "higher API call frequency."},
    "info_burst": {"Information": "Thank you for using Alpha Vantage! Please consider spreading "
                   "out your free API requests more sparingly (1 request per second). You may "
                   "subscribe to any of the premium plans at https://www.alphavantage.co/premium/"
                   " to lift the free key rate limit (25 requests per day)."},
    "info_daily": {"Information": "We have detected your API key as {key} and our standard API "
                   "rate limit is 25 requests per day. Please subscribe to any of the premium "
                   "plans at https://www.alphavantage.co/premium/ to instantly remove all daily "
                   "rate limits."},
    "info_premium": {"Information": "Thank you for using Alpha Vantage! The **outputsize=full** "
                     "parameter value is a premium feature for the TIME_SERIES_DAILY endpoint. "
                     "You may subscribe to any of the premium plans at "
                     "https://www.alphavantage.co/premium/ to instantly unlock all premium "
                     "features"},
    "info_demo": {"Information": "The **demo** API key is for demo purposes only. Please claim "
                  "your free API key at (https://www.alphavantage.co/support/#api-key)."},
    "empty_object": {},
    "info_premium_endpoint": {"Information": "Thank you for using Alpha Vantage! This is a "
                              "premium endpoint. You may subscribe to any of the premium plans "
                              "at https://www.alphavantage.co/premium/ to instantly unlock all "
                              "premium endpoints"},
}  # fmt: skip
ACTIONS_FUNCTIONS = ("SPLITS", "DIVIDENDS")
ACTIONS_SAMPLE = {"SPLITS": splits_payload, "DIVIDENDS": dividends_payload}
HTTP_STATUS = {"http_429": 429, "http_500": 500, "http_503": 503}


@dataclass(frozen=True)
class Request:
    at: float
    symbol: str
    outputsize: str
    apikey: str | None
    function: str = "TIME_SERIES_DAILY"
    interval: str = ""
    extended_hours: str = ""
    datatype: str = ""
    state: str = ""


def payload_from_bars(symbol: str, bars: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """An Alpha Vantage body for bars given oldest first as (date, {"1. open": ...})."""
    return {
        "Meta Data": {
            "1. Information": "Daily Prices (open, high, low, close) and Volumes",
            "2. Symbol": symbol,
            "3. Last Refreshed": bars[-1][0] if bars else "",
            "4. Output Size": "Compact",
            "5. Time Zone": "US/Eastern",
        },
        "Time Series (Daily)": dict(reversed(bars)),
    }


INTRADAY = "TIME_SERIES_INTRADAY"
CSV_HEADER = "timestamp,open,high,low,close,volume"
LISTING = "LISTING_STATUS"


def listing_text(rows: Sequence[Sequence[str]]) -> str:
    """A LISTING_STATUS body for rows of the seven fields, as the vendor writes its CSV."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(LISTING_HEADER.split(","))
    writer.writerows(rows)
    return out.getvalue()


def listing_body(behaviour: str, good: str) -> str:
    """The CSV ``behaviour`` makes of the good listing ``good`` (CSV text)."""
    if behaviour == "ok":
        return good
    if behaviour == "bad_header":
        return good.replace(LISTING_HEADER, "ticker,company,market,type,listed,delisted,state", 1)
    if behaviour == "header_only":
        return LISTING_HEADER + "\r\n"
    if behaviour == "empty_dates":
        return good.replace(",null,", ",,")
    if behaviour == "truncated":  # stops inside a row, as a body cut in transit does
        lines = good.split("\r\n")
        middle = len(lines) // 2
        return "\r\n".join(lines[:middle]) + "\r\n" + lines[middle][: len(lines[middle]) // 3]
    raise ValueError(f"unknown behaviour {behaviour!r} for {LISTING}")


def intraday_csv(payload: dict[str, Any], interval: str) -> str:
    """An intraday JSON answer as Alpha Vantage's CSV: a header, then one row per bar, newest
    first, values as in the JSON."""
    lines = [CSV_HEADER]
    for stamp, bar in payload[f"Time Series ({interval})"].items():
        values = [bar.get(k, "") for k in ("1. open", "2. high", "3. low", "4. close", "5. volume")]
        lines.append(",".join([stamp, *values]))
    return "\r\n".join(lines) + "\r\n"


def duplicate_newest_date(text: str, *, disagree: bool = True) -> str:
    """JSON objects may repeat a key; Alpha Vantage bodies have been seen doing it.

    ``disagree``: the copy has another volume (neither can be trusted); else an exact copy.
    """
    marker = '"Time Series (Daily)": {'
    start = text.index(marker) + len(marker)
    end = text.index("}", start) + 1
    newest = text[start:end]
    altered = newest.replace('"5. volume": "', '"5. volume": "9') if disagree else newest
    return text[:start] + altered + ", " + text[start:]


class AlphaVantageStub:
    def __init__(
        self,
        *,
        premium_full: bool = True,
        premium_intraday: bool = True,
        read_timeout_sleep: float = 3.0,
        now: dt.datetime | None = None,
    ) -> None:
        self.premium_full = premium_full  # False: answer full with the premium Information
        self.premium_intraday = premium_intraday  # False: intraday is a premium endpoint
        self.now = now  # the sample intraday bars' clock (New York, naive); None: the real one
        self.read_timeout_sleep = read_timeout_sleep
        self.requests: list[Request] = []
        self._scripts: dict[str, deque[str]] = defaultdict(deque)
        self._bars: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        self._action_scripts: dict[tuple[str, str], deque[str]] = defaultdict(deque)
        self._actions: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._intraday_scripts: dict[str, deque[str]] = defaultdict(deque)
        self._intraday: dict[tuple[str, str], list[tuple[str, dict[str, Any]]]] = {}
        self._listing_scripts: dict[str, deque[str]] = defaultdict(deque)
        self._listings: dict[str, str] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/query"

    def __enter__(self) -> AlphaVantageStub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def script(self, symbol: str, *behaviours: str) -> None:
        with self._lock:
            self._scripts[symbol.upper()].extend(behaviours)

    def set_bars(self, symbol: str, bars: list[tuple[str, dict[str, Any]]]) -> None:
        with self._lock:
            self._bars[symbol.upper()] = bars

    def script_actions(self, symbol: str, function: str, *behaviours: str) -> None:
        """Queue behaviours for one symbol's SPLITS or DIVIDENDS answers."""
        with self._lock:
            self._action_scripts[symbol.upper(), function.upper()].extend(behaviours)

    def set_actions(self, symbol: str, function: str, rows: list[dict[str, Any]]) -> None:
        """The ``data`` rows an ``ok`` answer of this symbol and function carries, as given."""
        with self._lock:
            self._actions[symbol.upper(), function.upper()] = rows

    def script_intraday(self, symbol: str, *behaviours: str) -> None:
        """Queue behaviours for one symbol's TIME_SERIES_INTRADAY answers."""
        with self._lock:
            self._intraday_scripts[symbol.upper()].extend(behaviours)

    def set_intraday(
        self, symbol: str, interval: str, bars: list[tuple[str, dict[str, Any]]]
    ) -> None:
        """The bars (oldest first, ``("2024-11-08 15:55:00", {"1. open": ...})``) an ``ok``
        intraday answer of this symbol and interval carries, as given."""
        with self._lock:
            self._intraday[symbol.upper(), interval] = bars

    def script_listings(self, state: str, *behaviours: str) -> None:
        """Queue behaviours for the LISTING_STATUS answers of ``state`` (active, delisted)."""
        with self._lock:
            self._listing_scripts[state.lower()].extend(behaviours)

    def set_listings(self, state: str, rows: Sequence[Sequence[str]] | str) -> None:
        """What an ``ok`` LISTING_STATUS answer of ``state`` carries: rows of the seven fields
        (``"null"`` for no date), or the whole body as text."""
        with self._lock:
            self._listings[state.lower()] = rows if isinstance(rows, str) else listing_text(rows)

    def listing_for(self, behaviour: str, state: str, key: str) -> tuple[str, str]:
        """(content type, body) of a LISTING_STATUS answer."""
        if behaviour in MESSAGES:
            body = json.dumps(MESSAGES[behaviour]).replace("{key}", key)
            return "application/json", body
        with self._lock:
            good = self._listings.get(state)
        return "application/x-download", listing_body(behaviour, good or listing_csv(state))

    def intraday_body_for(self, behaviour: str, query: dict[str, str], key: str) -> Any:
        symbol, interval = query.get("symbol", "").upper(), query.get("interval", "")
        outputsize = query.get("outputsize", "compact")
        if behaviour == "ok" and not self.premium_intraday:
            behaviour = "info_premium_endpoint"
        if behaviour in MESSAGES:
            return json.loads(json.dumps(MESSAGES[behaviour]).replace("{key}", key))
        if behaviour != "ok":
            raise ValueError(f"unknown behaviour {behaviour!r} for {INTRADAY}")
        if interval not in ("1min", "5min", "15min", "30min", "60min"):
            return MESSAGES["error_message"]
        with self._lock:
            bars = self._intraday.get((symbol, interval))
        if bars is not None:
            return intraday_payload_from_bars(symbol, interval, outputsize, bars)
        extended = query.get("extended_hours", "true").lower() == "true"
        return intraday_payload(
            symbol, interval, extended=extended, outputsize=outputsize, now=self.now
        )

    def count(self, symbol: str | None = None, function: str | None = None) -> int:
        return sum(
            1
            for r in self.requests
            if (symbol is None or r.symbol == symbol.upper())
            and (function is None or r.function == function.upper())
        )

    def _next_action(self, symbol: str, function: str) -> str:
        with self._lock:
            queue = self._action_scripts[symbol, function]
            return queue.popleft() if queue else "ok"

    def actions_body_for(self, behaviour: str, symbol: str, function: str, key: str) -> Any:
        if behaviour in MESSAGES:
            return json.loads(json.dumps(MESSAGES[behaviour]).replace("{key}", key))
        with self._lock:
            rows = self._actions.get((symbol, function))
        good = (
            ACTIONS_SAMPLE[function](symbol) if rows is None else {"symbol": symbol, "data": rows}
        )
        if behaviour == "ok":
            return good
        if behaviour == "empty_data":
            return {"symbol": symbol, "data": []}
        if behaviour == "wrong_symbol":
            return {**good, "symbol": "ZZZZ"}
        raise ValueError(f"unknown behaviour {behaviour!r} for {function}")

    def _next(self, symbol: str) -> str:
        with self._lock:
            queue = self._scripts[symbol]
            return queue.popleft() if queue else "ok"

    def body_for(self, behaviour: str, symbol: str, outputsize: str, key: str) -> Any:
        if behaviour == "ok":
            if outputsize == "full" and not self.premium_full:
                return MESSAGES["info_premium"]
            if symbol in self._bars:
                return payload_from_bars(symbol, self._bars[symbol])
            return daily_payload(symbol, outputsize)
        if behaviour in MESSAGES:
            return json.loads(json.dumps(MESSAGES[behaviour]).replace("{key}", key))
        good = daily_payload(symbol, "compact")
        series = good["Time Series (Daily)"]
        newest = next(iter(series))
        if behaviour == "empty_series":
            good["Time Series (Daily)"] = {}
        elif behaviour == "wrong_symbol":
            good["Meta Data"]["2. Symbol"] = "ZZZZ"
        elif behaviour == "non_numeric":
            series[newest] = {**series[newest], "1. open": "abc", "5. volume": ""}
        elif behaviour == "future":
            future = (dt.date.today() + dt.timedelta(days=30)).isoformat()
            good["Time Series (Daily)"] = {future: series[newest], **series}
        elif behaviour == "empty_values":
            series[newest] = dict.fromkeys(series[newest], "")
        elif behaviour == "missing_field":
            series[newest] = {k: v for k, v in series[newest].items() if k != "5. volume"}
        elif behaviour == "bad_date":
            bar = series.pop(newest)
            good["Time Series (Daily)"] = {newest.replace("-", "/"): bar, **series}
        else:
            raise ValueError(f"unknown behaviour {behaviour!r}")
        return good

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: tests read ``stub.requests`` instead."""

            def do_GET(self) -> None:
                query = {k: v[-1] for k, v in parse_qs(urlsplit(self.path).query).items()}
                if query.get("function", "").upper() in ACTIONS_FUNCTIONS:
                    self._answer_actions(query)
                    return
                if query.get("function", "").upper() == INTRADAY:
                    self._answer_intraday(query)
                    return
                if query.get("function", "").upper() == LISTING:
                    self._answer_listings(query)
                    return
                symbol = query.get("symbol", "").upper()
                outputsize = query.get("outputsize", "compact")
                key = query.get("apikey", "")
                with stub._lock:
                    stub.requests.append(Request(time.time(), symbol, outputsize, key or None))
                behaviour = stub._next(symbol)
                if behaviour == "reset":
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                    )
                    self.connection.close()
                    return
                if behaviour == "timeout":
                    time.sleep(stub.read_timeout_sleep)
                    behaviour = "ok"
                if behaviour in HTTP_STATUS:
                    self._send(
                        HTTP_STATUS[behaviour], b"<html><body>busy</body></html>", "text/html"
                    )
                    return
                if behaviour == "html":
                    self._send(200, b"<!DOCTYPE html><html><body>Maintenance</body></html>",
                               "text/html")  # fmt: skip
                    return
                wire = ("truncated", "duplicates", "exact_duplicates", "cut_body")
                plain = "ok" if behaviour in wire else behaviour
                text = json.dumps(stub.body_for(plain, symbol, outputsize, key))
                if behaviour in ("duplicates", "exact_duplicates"):
                    text = duplicate_newest_date(text, disagree=behaviour == "duplicates")
                self._finish(behaviour, text.encode())

            def _answer_actions(self, query: dict[str, str]) -> None:
                symbol, function = query.get("symbol", "").upper(), query["function"].upper()
                key = query.get("apikey", "")
                request = Request(time.time(), symbol, query.get("outputsize", ""), key or None,
                                  function)  # fmt: skip
                with stub._lock:
                    stub.requests.append(request)
                behaviour = stub._next_action(symbol, function)
                if self._fault(behaviour):
                    return
                plain = "ok" if behaviour in ("truncated", "cut_body", "timeout") else behaviour
                body = json.dumps(stub.actions_body_for(plain, symbol, function, key)).encode()
                self._finish(behaviour, body)

            def _answer_intraday(self, query: dict[str, str]) -> None:
                symbol, key = query.get("symbol", "").upper(), query.get("apikey", "")
                request = Request(
                    time.time(), symbol, query.get("outputsize", ""), key or None, INTRADAY,
                    query.get("interval", ""), query.get("extended_hours", ""),
                    query.get("datatype", ""),
                )  # fmt: skip
                with stub._lock:
                    stub.requests.append(request)
                    queue = stub._intraday_scripts[symbol]
                    behaviour = queue.popleft() if queue else "ok"
                if self._fault(behaviour):
                    return
                plain = "ok" if behaviour in ("truncated", "cut_body", "timeout") else behaviour
                body = stub.intraday_body_for(plain, query, key)
                if query.get("datatype") == "csv" and "Meta Data" in body:
                    text = intraday_csv(body, query.get("interval", ""))
                    self._send(200, text.encode(), "application/x-download")
                    return
                self._finish(behaviour, json.dumps(body).encode())

            def _answer_listings(self, query: dict[str, str]) -> None:
                state, key = query.get("state", "active").lower(), query.get("apikey", "")
                request = Request(time.time(), "", "", key or None, LISTING, state=state)
                with stub._lock:
                    stub.requests.append(request)
                    queue = stub._listing_scripts[state]
                    behaviour = queue.popleft() if queue else "ok"
                if self._fault(behaviour):
                    return
                plain = "ok" if behaviour in ("cut_body", "timeout") else behaviour
                content_type, body = stub.listing_for(plain, state, key)
                if behaviour == "cut_body":
                    self._send(200, body.encode(), content_type, send=len(body) // 2)
                    self.close_connection = True
                    return
                self._send(200, body.encode(), content_type)

            def _fault(self, behaviour: str) -> bool:
                """Answer a transport, HTTP or HTML fault; False when the body is JSON."""
                if behaviour == "reset":
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                    )
                    self.connection.close()
                    return True
                if behaviour == "timeout":
                    time.sleep(stub.read_timeout_sleep)
                    return False
                if behaviour in HTTP_STATUS:
                    self._send(
                        HTTP_STATUS[behaviour], b"<html><body>busy</body></html>", "text/html"
                    )
                    return True
                if behaviour == "html":
                    self._send(200, b"<!DOCTYPE html><html><body>Maintenance</body></html>",
                               "text/html")  # fmt: skip
                    return True
                return False

            def _finish(self, behaviour: str, body: bytes) -> None:
                if behaviour == "truncated":
                    body = body[: len(body) // 2]
                if behaviour == "cut_body":  # promise the whole body, send half, hang up
                    self._send(200, body, "application/json", send=len(body) // 2)
                    self.close_connection = True
                    return
                self._send(200, body, "application/json")

            def _send(
                self, status: int, body: bytes, content_type: str, send: int | None = None
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body if send is None else body[:send])

        return Handler
