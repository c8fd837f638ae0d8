"""What Alpha Vantage can answer, and what each answer means for the pipeline.

Alpha Vantage reports most errors as HTTP 200 with a JSON body. Its wording has changed many
times since 2017, so ``classify`` matches on the JSON key plus short, stable substrings (see
shared/ALPHA_VANTAGE.md) and turns every known shape into one exception class the caller can act
on: retry, fall back, or fail the symbol with a message a user understands.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, quote_plus

SERIES_KEY = "Time Series (Daily)"
META_KEY = "Meta Data"


class AlphaVantageError(Exception):
    """Base class. Messages are already redacted and name the symbol."""

    retryable = False


class RetryableError(AlphaVantageError):
    retryable = True


class RateLimitedError(RetryableError):
    """A per-second or per-minute limit: wait a little and try again."""


class TransientHTTPError(RetryableError):
    """HTTP 429/5xx, a timeout or a dropped connection."""


class InvalidCallError(AlphaVantageError):
    """Unknown symbol or bad parameters: retrying cannot help."""


class InvalidApiKeyError(AlphaVantageError):
    """The key is missing or wrong: every symbol would fail the same way."""


class DailyQuotaError(AlphaVantageError):
    """The day's quota is used up: stop, and retry after it resets."""


class PremiumOnlyError(AlphaVantageError):
    """``outputsize=full`` (or the endpoint) is not in this key's plan."""

    def __init__(self, message: str, *, outputsize_full: bool) -> None:
        super().__init__(message)
        self.outputsize_full = outputsize_full


class MalformedResponseError(AlphaVantageError):
    """Not JSON, an HTML page, ``{}``, an empty series or a series for another symbol."""


def redact(text: str, secret: str | None) -> str:
    """Remove the API key from any text before it is logged, raised or stored.

    Also in its URL-encoded forms: a request line or a URL carries the key as sent, and a key
    with ``+``, ``/``, ``=`` or ``&`` in it is sent encoded.
    """
    if secret:
        forms = {secret, quote(secret, safe=""), quote_plus(secret)}
        for form in sorted(forms, key=len, reverse=True):
            text = text.replace(form, "***")
    return text


def _first_message(payload: Mapping[str, Any]) -> tuple[str, str] | None:
    for key in ("Error Message", "Note", "Information"):
        value = payload.get(key)
        if value is not None:
            return key, str(value)
    return None


def classify(symbol: str, payload: Any, *, api_key: str | None) -> Mapping[str, Any]:
    """Return the daily series of a good response, or raise the error it stands for."""
    return _series(symbol, symbol, payload, SERIES_KEY, api_key)


def intraday_series_key(interval: str) -> str:
    """``Time Series (5min)``: the intraday answer names its series after the interval."""
    return f"Time Series ({interval})"


def classify_intraday(
    symbol: str, interval: str, payload: Any, *, api_key: str | None
) -> Mapping[str, Any]:
    """Return the series of a good TIME_SERIES_INTRADAY answer, or raise what it stands for.

    Same error bodies as the daily series; a free key's "premium endpoint" ``Information`` is
    a ``PremiumOnlyError`` whose ``outputsize_full`` is False."""
    who = f"{symbol}: TIME_SERIES_INTRADAY {interval}"
    return _series(who, symbol, payload, intraday_series_key(interval), api_key)


def _missing(who: str, what: str, payload: Mapping[str, Any], api_key: str | None) -> Exception:
    """An answer without the part we asked for, naming the keys it has (never the key)."""
    keys = redact(", ".join(sorted(map(str, payload)))[:200], api_key)
    return MalformedResponseError(f"{who}: no {what} in the response (keys: {keys})")


def _series(
    who: str, symbol: str, payload: Any, series_key: str, api_key: str | None
) -> Mapping[str, Any]:
    _check_envelope(who, payload, series_key, api_key)
    series = payload.get(series_key)
    if not isinstance(series, Mapping):
        raise _missing(who, f"'{series_key}'", payload, api_key)
    if not series:
        raise MalformedResponseError(f"{who}: Alpha Vantage answered an empty time series")
    meta = payload.get(META_KEY)
    answered = str(meta.get("2. Symbol", "")).strip() if isinstance(meta, Mapping) else ""
    if answered and answered.upper() != symbol.upper():
        raise MalformedResponseError(
            f"{who}: Alpha Vantage answered a series for {answered!r} instead"
        )
    return series


def _check_envelope(who: str, payload: Any, data_key: str, api_key: str | None) -> None:
    """Raise for what every function's answer can be instead of data: not an object, one of
    the vendor's messages (with no data beside it), or ``{}``."""
    if not isinstance(payload, Mapping):
        raise MalformedResponseError(f"{who}: Alpha Vantage answered JSON that is not an object")
    found = _first_message(payload)
    if found is not None and data_key not in payload:
        key, message = found
        _raise_for_message(who, key, redact(message, api_key))
    if not payload:
        raise MalformedResponseError(f"{who}: Alpha Vantage answered an empty object {{}}")


def _raise_for_message(symbol: str, key: str, message: str) -> None:
    low = message.lower()
    short = message if len(message) <= 300 else message[:300] + "..."
    if key == "Error Message":
        if "apikey" in low or "api key" in low:
            raise InvalidApiKeyError(f"{symbol}: Alpha Vantage rejected the API key: {short}")
        raise InvalidCallError(
            f"{symbol}: Alpha Vantage refused the call (unknown symbol?): {short}"
        )
    # Order matters: the per-second message also mentions "25 requests per day", and the old
    # per-minute Note mentions "500 calls per day".
    if "premium" in low and "outputsize" in low:
        raise PremiumOnlyError(
            f"{symbol}: outputsize=full is a premium feature for this key: {short}",
            outputsize_full=True,
        )
    if "more sparingly" in low or "per second" in low:
        raise RateLimitedError(f"{symbol}: Alpha Vantage per-second limit hit: {short}")
    if "requests per day" in low or "daily rate limit" in low:
        raise DailyQuotaError(
            f"{symbol}: Alpha Vantage daily quota used up; retry after the quota resets "
            f"(midnight US/Eastern): {short}"
        )
    if "call frequency" in low or "per minute" in low or "optimizing your api call" in low:
        raise RateLimitedError(f"{symbol}: Alpha Vantage per-minute limit hit: {short}")
    if "premium" in low:
        raise PremiumOnlyError(
            f"{symbol}: this endpoint is not in the key's plan: {short}", outputsize_full=False
        )
    if "demo" in low:
        raise InvalidApiKeyError(
            f"{symbol}: the demo key only works for its sample symbols; set "
            f"ALPHAVANTAGE_API_KEY to your own key: {short}"
        )
    raise InvalidCallError(f"{symbol}: Alpha Vantage answered {key!r}: {short}")


ACTIONS_FUNCTIONS = ("SPLITS", "DIVIDENDS")
DATA_KEY = "data"


def classify_actions(
    symbol: str, function: str, payload: Any, *, api_key: str | None
) -> list[dict[str, Any]]:
    """Return the event rows of a good SPLITS or DIVIDENDS answer, or raise what it stands for.

    Good is ``{"symbol": <this symbol>, "data": [...]}``; an empty list is a good answer (the
    symbol has no events). The error bodies are the time series' ones, so they take the same
    path and the same exception classes: the caller retries, stops or fails the symbol alike.
    """
    who = f"{symbol}: {function}"
    _check_envelope(who, payload, DATA_KEY, api_key)
    rows = payload.get(DATA_KEY)
    if not isinstance(rows, list):
        raise _missing(who, f"'{DATA_KEY}' list", payload, api_key)
    answered = str(payload.get("symbol") or "").strip()
    if not answered:
        raise MalformedResponseError(f"{who}: the answer does not say which symbol it is for")
    if answered.upper() != symbol.upper():
        shown = redact(answered, api_key)[:40]
        raise MalformedResponseError(f"{who}: Alpha Vantage answered events for {shown!r} instead")
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise MalformedResponseError(f"{who}: event {i} of the answer is not a JSON object")
    return [dict(row) for row in rows]
