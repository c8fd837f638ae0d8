"""Content negotiation: the one reading of ``Accept`` and ``format``, for the fast path and the
routes alike."""

from __future__ import annotations

import functools
from typing import Literal, cast, get_args
from urllib.parse import parse_qsl

Format = Literal["json", "csv", "arrow", "parquet"]
FORMATS: tuple[Format, ...] = get_args(Format)
"""In the order a tie between equal quality values is broken: JSON first, as it always was."""

FORMAT_PARAM = "format"
"""The query parameter that names the format where a client cannot set ``Accept`` (a URL given
to ``pl.read_parquet`` or ``pd.read_csv``); it wins over ``Accept``."""

ARROW_STREAM = "application/vnd.apache.arrow.stream"
PARQUET = "application/vnd.apache.parquet"

MEDIA_TYPES: dict[Format, str] = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "arrow": ARROW_STREAM,
    "parquet": PARQUET,
}

_RANGES: dict[Format, tuple[bytes, bytes]] = {
    "json": (b"application/json", b"application/*"),
    "csv": (b"text/csv", b"text/*"),
    "arrow": (ARROW_STREAM.encode(), b"application/*"),
    "parquet": (PARQUET.encode(), b"application/*"),
}
"""Each format's exact media type and the wildcard family that also names it."""


def negotiate(accept: bytes | None, query_string: bytes) -> Format:
    """The format of a request: a valid ``format`` parameter, else ``Accept``. A bad or repeated
    ``format`` falls back to ``Accept`` here; the route that takes it answers 400."""
    if b"format=" in query_string:
        named = query_format(query_string)
        if named is not None:
            return named
    return request_format(accept)


def query_format(query_string: bytes) -> Format | None:
    """The ``format`` parameter if it is given once with a known value, else None."""
    values = [
        value
        for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
        if name == FORMAT_PARAM
    ]
    if len(values) == 1 and values[0] in FORMATS:
        return cast(Format, values[0])
    return None


@functools.lru_cache(maxsize=256)
def request_format(accept: bytes | None) -> Format:
    """The format the client prefers strictly over JSON, else JSON.

    Quality values count (``text/csv;q=0.5, application/json`` is JSON), an exact media type
    beats a wildcard, and a tie, a missing header or anything unknown gives JSON (between
    the others, the order of ``FORMATS``)."""
    if not accept:
        return "json"
    found = _qualities(accept)
    best: Format = "json"
    best_q = _quality(found, *_RANGES["json"])
    for fmt in FORMATS[1:]:
        q = _quality(found, *_RANGES[fmt])
        if q > best_q:
            best, best_q = fmt, q
    return best


def _qualities(accept: bytes) -> dict[bytes, float]:
    found: dict[bytes, float] = {}
    for media_range in accept.lower().split(b","):
        media, *params = (part.strip() for part in media_range.split(b";"))
        q = 1.0
        for param in params:
            if param.startswith(b"q="):
                try:
                    q = float(param[2:])
                except ValueError:
                    q = 0.0
        found.setdefault(media, q)
    return found


def _quality(found: dict[bytes, float], exact: bytes, family: bytes) -> float:
    for media in (exact, family, b"*/*"):
        if media in found:
            return found[media]
    return 0.0
