"""The Alpha Vantage client: plain Python, wrapped for Dagster by ``defs.resources``.

One pooled ``requests`` session with explicit timeouts (per socket wait, and a deadline for the
whole call, so a server trickling bytes cannot hold it); every request first takes a permit from
the shared limiter; retryable answers (rate limits, 429/5xx, timeouts, dropped connections) are
retried by tenacity with exponential backoff and jitter; everything else fails the symbol with a
redacted, specific error. With no API key the session answers from the bundled sample instead of
the network, through exactly the same code.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit

import requests
from requests.adapters import HTTPAdapter
from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from market_core.atomic import write_text_atomic
from market_core.home import DataHome
from market_core.schema import INTRADAY_INTERVALS
from market_pipeline.source.errors import (
    ACTIONS_FUNCTIONS,
    MalformedResponseError,
    PremiumOnlyError,
    RetryableError,
    TransientHTTPError,
    classify,
    classify_actions,
    classify_intraday,
    intraday_series_key,
    redact,
)
from market_pipeline.source.rate_limit import (
    SharedRateLimiter,
    key_id,
)
from market_pipeline.source.sample import SAMPLE_BASE_URL, SampleAdapter
from market_pipeline.source.wire import FIELDS

DEFAULT_BASE_URL = "https://www.alphavantage.co/query"
INTRADAY_OFF = "off"
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Fetched:
    """A good daily response, with where and when it came from (never the key)."""

    symbol: str
    payload: dict[str, Any]
    series: Mapping[str, Any]
    source: str
    outputsize: str
    fetched_at: dt.datetime


@dataclass(frozen=True)
class FetchedIntraday:
    """A good TIME_SERIES_INTRADAY answer (JSON, or CSV read into the same shape), with what
    was asked and where and when it came from (never the key)."""

    symbol: str
    interval: str
    extended_hours: bool
    payload: Mapping[str, Any]
    series: Mapping[str, Any]
    source: str
    outputsize: str
    fetched_at: dt.datetime


ActionsFunction = Literal["SPLITS", "DIVIDENDS"]
Datatype = Literal["json", "csv"]
ListingState = Literal["active", "delisted"]
LISTING_STATES: tuple[ListingState, ...] = ("active", "delisted")
LISTING_FUNCTION = "LISTING_STATUS"
LISTING_HEADER: tuple[str, ...] = (
    "symbol", "name", "exchange", "assetType", "ipoDate", "delistingDate", "status",
)  # fmt: skip
"""The columns of a LISTING_STATUS answer, as Alpha Vantage names them."""
_MESSAGE_KEYS = frozenset({"Error Message", "Note", "Information"})


@dataclass(frozen=True)
class FetchedListing:
    """A LISTING_STATUS answer that is CSV under the listing's header: its header and rows as
    received (a short or long row kept as sent), with where and when (never the key)."""

    state: ListingState
    header: tuple[str, ...]
    rows: list[list[str]]
    source: str
    fetched_at: dt.datetime


@dataclass(frozen=True)
class FetchedActions:
    """A good SPLITS or DIVIDENDS answer: its ``data`` rows as received (newest first, every
    value a string), with where and when they came from (never the key)."""

    symbol: str
    function: ActionsFunction
    rows: list[dict[str, Any]]
    source: str
    fetched_at: dt.datetime


class PairsDict(dict[str, Any]):
    """A JSON object that remembers repeated keys: a series may list a date twice, and the
    second bar must reach validation (and the rejects), not vanish inside ``json.loads``."""

    pairs: list[tuple[str, Any]]

    @classmethod
    def from_pairs(cls, pairs: list[tuple[str, Any]]) -> PairsDict:
        obj = cls()
        for key, value in pairs:
            obj.setdefault(key, value)
        obj.pairs = pairs
        return obj

    def items_with_repeats(self) -> list[tuple[str, Any]]:
        return list(self.pairs)


def text(value: Any) -> str | None:
    """A value as received, as text: raw Parquet keeps what Alpha Vantage sent."""
    return None if value is None else str(value)


def series_columns(
    payload: Mapping[str, Any], series: Mapping[str, Any]
) -> tuple[Mapping[str, Any], list[str], dict[str, list[str | None]]]:
    """An answer's ``Meta Data``, its series keys in the order sent (repeats kept) and each bar
    field as a text column: the raw frame of the daily and the intraday path alike."""
    meta = payload.get("Meta Data")
    pairs = series.items_with_repeats() if isinstance(series, PairsDict) else list(series.items())
    bars = [v if isinstance(v, Mapping) else {} for _, v in pairs]
    values = {name: [text(bar.get(key)) for bar in bars] for name, key in FIELDS.items()}
    return (meta if isinstance(meta, Mapping) else {}), [key for key, _ in pairs], values


@dataclass(frozen=True)
class IntradayRefusal:
    """Alpha Vantage refused TIME_SERIES_INTRADAY to this key: its words, and since when."""

    message: str
    since: str


class KeyFacts:
    """What Alpha Vantage told us about a key, kept across runs: is ``full`` refused? is the
    intraday endpoint refused? The file is named by the key's fingerprint, never the key, so a
    new key starts with no facts."""

    def __init__(self, path: Path) -> None:
        self._path = path

    @property
    def path(self) -> Path:
        return self._path

    def _read(self) -> dict[str, Any]:
        try:
            facts = json.loads(self._path.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return facts if isinstance(facts, dict) else {}

    def _update(self, **changes: Any) -> None:
        facts = {k: v for k, v in {**self._read(), **changes}.items() if v is not None}
        write_text_atomic(self._path, json.dumps(facts))

    def full_refused(self) -> bool:
        return bool(self._read().get("full_refused"))

    def mark_full_refused(self) -> None:
        self._update(full_refused=True, since=dt.date.today().isoformat())

    def intraday_refused(self) -> IntradayRefusal | None:
        refused = self._read().get("intraday_refused")
        if not isinstance(refused, dict):
            return None
        return IntradayRefusal(str(refused.get("message", "")), str(refused.get("since", "")))

    def mark_intraday_refused(self, message: str) -> None:
        since = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        self._update(intraday_refused={"message": message, "since": since})

    def clear_intraday_refused(self) -> None:
        if "intraday_refused" in self._read():
            self._update(intraday_refused=None)


def key_facts(home: DataHome, api_key: str) -> KeyFacts:
    return KeyFacts(home.state_dir / f"alpha_vantage-{key_id(api_key)}.json")


class _RedactingFilter(logging.Filter):
    """urllib3 logs request lines with the query string, and so with the key."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self._secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact(message, self._secret)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


_filtered_keys: set[str] = set()


def _redact_library_logs(secret: str) -> None:
    if secret in _filtered_keys:
        return
    _filtered_keys.add(secret)
    for name in ("urllib3", "urllib3.connectionpool", "requests"):
        logging.getLogger(name).addFilter(_RedactingFilter(secret))


class AlphaVantageClient:
    def __init__(
        self,
        *,
        home: DataHome,
        api_key: str | None,
        base_url: str,
        requests_per_second: int,
        requests_per_minute: int,
        requests_per_day: int,
        timeout_seconds: float = 30.0,
        deadline_seconds: float = 120.0,
        max_attempts: int = 6,
        backoff_seconds: float = 1.0,
        max_backoff_seconds: float = 60.0,
        limiter_postgres_url: str | None = None,
    ) -> None:
        """``limiter_postgres_url``: the key's limits live in that PostgreSQL, shared by every
        machine using it, instead of in SQLite files under the data home."""
        self._key = api_key
        self._session = requests.Session()
        self._timeout = (min(10.0, timeout_seconds), timeout_seconds)
        self._deadline = deadline_seconds
        self._attempts = max_attempts
        self._backoff = backoff_seconds
        self._max_backoff = max_backoff_seconds
        if api_key:
            _redact_library_logs(api_key)
            self.base_url = base_url
            self._session.mount(base_url, HTTPAdapter(pool_connections=4, pool_maxsize=16))
            self._limiter: SharedRateLimiter | None = SharedRateLimiter(
                home.state_dir,
                api_key,
                per_second=requests_per_second,
                per_minute=requests_per_minute,
                per_day=requests_per_day,
                postgres_url=limiter_postgres_url,
            )
            self.facts: KeyFacts | None = key_facts(home, api_key)
        else:
            self.base_url = SAMPLE_BASE_URL
            self._session.mount(SAMPLE_BASE_URL, SampleAdapter())
            self._limiter = None
            self.facts = None

    @property
    def is_sample(self) -> bool:
        return self._key is None

    def close(self) -> None:
        self._session.close()
        if self._limiter is not None:
            self._limiter.close()

    def fetch_daily(self, symbol: str, outputsize: str) -> Fetched:
        """The daily series of ``symbol``; falls back to compact once if full is refused."""
        try:
            return self._fetch_with_retries(symbol, outputsize)
        except PremiumOnlyError as exc:
            if not (exc.outputsize_full and outputsize == "full"):
                raise
            if self.facts is not None:
                self.facts.mark_full_refused()
            return self._fetch_with_retries(symbol, "compact")

    def fetch_actions(self, symbol: str, function: ActionsFunction) -> FetchedActions:
        """The SPLITS or DIVIDENDS answer of ``symbol``: one more call on the same permits.

        Retried, classified and redacted like ``fetch_daily``; ``"data": []`` is a good answer.
        """
        if function not in ACTIONS_FUNCTIONS:
            raise ValueError(f"function must be one of {ACTIONS_FUNCTIONS}, got {function!r}")
        return self._retrying()(self._fetch_actions_once, symbol, function)

    def _fetch_actions_once(self, symbol: str, function: ActionsFunction) -> FetchedActions:
        query = {"function": function, "symbol": symbol}
        payload, source, fetched_at = self._get(symbol, query, who=f"{symbol}: {function}")
        rows = classify_actions(symbol, function, payload, api_key=self._key)
        return FetchedActions(symbol, function, rows, source, fetched_at)

    def fetch_listing_status(self, state: ListingState) -> FetchedListing:
        """The LISTING_STATUS answer for ``state``: one call on the same permits, retried,
        classified and redacted like ``fetch_daily``. The answer is CSV; errors are JSON."""
        if state not in LISTING_STATES:
            raise ValueError(f"state must be one of {LISTING_STATES}, got {state!r}")
        return self._retrying()(self._fetch_listing_once, state)

    def _fetch_listing_once(self, state: ListingState) -> FetchedListing:
        query = {"function": LISTING_FUNCTION, "state": state}
        who = f"{LISTING_FUNCTION} state={state}"
        payload, source, fetched_at = self._get(
            LISTING_FUNCTION, query, who=who, decode=self._decode_listing
        )
        header, rows = payload
        return FetchedListing(state, header, rows, source, fetched_at)

    def _decode_listing(
        self, who: str, response: requests.Response
    ) -> tuple[tuple[str, ...], list[list[str]]]:
        """The header and the rows of a CSV answer, or the error a JSON answer stands for.

        A body that stops inside a row (no line end, fewer fields than the header) is cut off:
        refused whole, so that half a listing never replaces the last good one."""
        if response.content.lstrip()[:1] in (b"{", b"["):
            payload = self._decode(who, response)
            if isinstance(payload, Mapping) and (not payload or _MESSAGE_KEYS & payload.keys()):
                classify(who, payload, api_key=self._key)  # raises the message's error
            raise MalformedResponseError(f"{who}: Alpha Vantage answered JSON, not the CSV listing")
        self._decode_status(who, response)
        text = response.content.decode("utf-8-sig", errors="replace")
        rows = list(csv.reader(io.StringIO(text)))
        header = tuple(h.strip() for h in rows[0]) if rows else ()
        if not set(LISTING_HEADER) <= set(header):
            head = redact(text[:80], self._key).replace("\n", " ")
            kind = "an HTML page" if "<" in head[:20] else "CSV without the listing's columns"
            raise MalformedResponseError(f"{who}: Alpha Vantage answered {kind} (starts {head!r})")
        body = [row for row in rows[1:] if row]
        if body and not text.endswith(("\n", "\r")) and len(body[-1]) < len(header):
            raise MalformedResponseError(
                f"{who}: the answer stops inside its row {len(body)} (cut off)"
            )
        return header, body

    def fetch_intraday(
        self,
        symbol: str,
        interval: str,
        *,
        extended_hours: bool,
        outputsize: str,
        datatype: Datatype = "json",
    ) -> FetchedIntraday:
        """The TIME_SERIES_INTRADAY bars of ``symbol`` (as traded: ``adjusted=false``).

        Retried, classified and redacted like ``fetch_daily``, on the same permits. A refused
        ``full`` falls back to ``compact`` once; a refused endpoint (a free key) is remembered
        in the key's facts, so that the intraday sensor stops asking, and raised."""
        if interval not in INTRADAY_INTERVALS:
            raise ValueError(f"interval must be one of {INTRADAY_INTERVALS}, got {interval!r}")
        ask = (symbol, interval, extended_hours, datatype)
        try:
            fetched = self._retrying()(self._fetch_intraday_once, *ask, outputsize)
        except PremiumOnlyError as exc:
            if exc.outputsize_full and outputsize == "full":
                return self._retrying()(self._fetch_intraday_once, *ask, "compact")
            if self.facts is not None:
                self.facts.mark_intraday_refused(str(exc))
            raise
        if self.facts is not None:
            self.facts.clear_intraday_refused()
        return fetched

    def _fetch_intraday_once(
        self, symbol: str, interval: str, extended_hours: bool, datatype: Datatype, outputsize: str
    ) -> FetchedIntraday:
        query = {
            "function": "TIME_SERIES_INTRADAY",
            "symbol": symbol,
            "interval": interval,
            "adjusted": "false",
            "extended_hours": "true" if extended_hours else "false",
            "outputsize": outputsize,
        }
        if datatype == "csv":
            query["datatype"] = "csv"
        decode = self._decode_intraday_csv(interval) if datatype == "csv" else self._decode
        payload, source, fetched_at = self._get(
            symbol, query, who=f"{symbol}: TIME_SERIES_INTRADAY {interval}", decode=decode
        )
        series = classify_intraday(symbol, interval, payload, api_key=self._key)
        return FetchedIntraday(
            symbol, interval, extended_hours, payload, series, source, outputsize, fetched_at
        )

    def _decode_intraday_csv(self, interval: str) -> Callable[[str, requests.Response], Any]:
        """A CSV answer (``timestamp,open,high,low,close,volume``, newest first) read into the
        JSON answer's shape, so that one classification and one raw frame serve both. Errors
        come as JSON even when CSV was asked for."""

        def decode(who: str, response: requests.Response) -> Any:
            if response.content.lstrip()[:1] in (b"{", b"["):
                return self._decode(who, response)
            self._decode_status(who, response)
            text = response.content.decode("utf-8", errors="replace")
            rows = list(csv.reader(io.StringIO(text)))
            header = [h.strip().lower() for h in rows[0]] if rows else []
            if header[:1] != ["timestamp"] or not set(FIELDS) <= set(header):
                head = redact(text[:80], self._key).replace("\n", " ")
                raise MalformedResponseError(
                    f"{who}: Alpha Vantage answered CSV without the intraday columns "
                    f"(starts {head!r})"
                )
            column = {name: header.index(name) for name in ("timestamp", *FIELDS)}
            pairs = [
                (row[0], {key: _cell(row, column[name]) for name, key in FIELDS.items()})
                for row in rows[1:]
                if row
            ]
            return {
                "Meta Data": {"4. Interval": interval},
                intraday_series_key(interval): PairsDict.from_pairs(pairs),
            }

        return decode

    def _retrying(self) -> Retrying:
        return Retrying(
            retry=retry_if_exception_type(RetryableError),
            stop=stop_after_attempt(self._attempts),
            wait=wait_exponential_jitter(
                initial=self._backoff, max=self._max_backoff, jitter=self._backoff
            ),
            reraise=True,
        )

    def _fetch_with_retries(self, symbol: str, outputsize: str) -> Fetched:
        return self._retrying()(self._fetch_once, symbol, outputsize)

    def _fetch_once(self, symbol: str, outputsize: str) -> Fetched:
        query = {"function": "TIME_SERIES_DAILY", "symbol": symbol, "outputsize": outputsize}
        payload, source, fetched_at = self._get(symbol, query)
        series = classify(symbol, payload, api_key=self._key)
        return Fetched(symbol, payload, series, source, outputsize, fetched_at)

    def _get(
        self,
        symbol: str,
        query: dict[str, str],
        who: str | None = None,
        decode: Callable[[str, requests.Response], Any] | None = None,
    ) -> tuple[Any, str, dt.datetime]:
        """One call after one permit: the decoded body, the URL without the key, and when.

        ``who`` starts every error message (the symbol, unless told otherwise); ``decode``
        reads the body (JSON unless told otherwise)."""
        who = who or symbol
        decode = decode or self._decode
        if self._limiter is not None:
            self._limiter.acquire(symbol)
        source = f"{self.base_url}?{urlencode(query)}"
        params = {**query, "apikey": self._key} if self._key else query
        fetched_at = dt.datetime.now(dt.UTC)
        started = time.monotonic()
        try:
            response = self._session.get(
                self.base_url, params=params, timeout=self._timeout, stream=True
            )
            self._read_body(who, response, started + self._deadline)
        except requests.RequestException as exc:
            # requests puts the full URL, key included, into its messages: never chain them.
            host = urlsplit(self.base_url).netloc or self.base_url
            raise TransientHTTPError(
                f"{who}: {type(exc).__name__} talking to {host} (no response)"
            ) from None
        return decode(who, response), source, fetched_at

    def _read_body(self, symbol: str, response: requests.Response, deadline: float) -> None:
        """Read the whole body into ``response.content`` before ``deadline`` (monotonic).

        ``timeout_seconds`` bounds each wait on the socket, so a server sending a few bytes now
        and then could hold a call forever; at the deadline a timer shuts the socket down
        (urllib3's ``shutdown``, made to unblock a read from another thread) and the call fails
        as retryable. The status line and headers are still bounded per wait only."""
        raw = response.raw
        if not hasattr(raw, "shutdown"):  # the sample adapter: the body is already there
            return
        expired = threading.Event()

        def cut() -> None:
            expired.set()
            with contextlib.suppress(Exception):  # done meanwhile, or already released
                raw.shutdown()

        timer = threading.Timer(max(0.0, deadline - time.monotonic()), cut)
        timer.daemon = True
        timer.start()
        try:
            response.content  # noqa: B018 (reads and keeps the body)
        except requests.RequestException:
            if not expired.is_set():
                raise
        finally:
            timer.cancel()
        if expired.is_set():
            response.close()
            raise TransientHTTPError(
                f"{symbol}: Alpha Vantage was still sending its answer after "
                f"{self._deadline:g} s (deadline_seconds); gave up on it"
            )

    def _decode(self, symbol: str, response: requests.Response) -> Any:
        self._decode_status(symbol, response)
        try:
            return json.loads(response.content, object_pairs_hook=PairsDict.from_pairs)
        except ValueError:
            head = redact(response.text[:80], self._key).replace("\n", " ")
            kind = "an HTML page" if "<" in head[:20] else "truncated or invalid JSON"
            raise MalformedResponseError(
                f"{symbol}: Alpha Vantage answered {kind} (starts {head!r})"
            ) from None

    @staticmethod
    def _decode_status(symbol: str, response: requests.Response) -> None:
        if response.status_code in RETRY_STATUS:
            raise TransientHTTPError(
                f"{symbol}: Alpha Vantage answered HTTP {response.status_code}"
            )
        if response.status_code != 200:
            raise MalformedResponseError(
                f"{symbol}: Alpha Vantage answered HTTP {response.status_code}"
            )


def _cell(row: list[str], index: int) -> str | None:
    return row[index] if index < len(row) else None
