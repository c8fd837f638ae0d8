"""Content negotiation: the one reading of ``Accept``, for the fast path and the routes alike."""

from __future__ import annotations

import functools
from typing import Literal

Format = Literal["json", "csv"]

MEDIA_TYPES: dict[Format, str] = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
}


@functools.lru_cache(maxsize=256)
def request_format(accept: bytes | None) -> Format:
    """CSV only if the client prefers ``text/csv`` strictly over JSON; JSON otherwise.

    Quality values count (``text/csv;q=0.5, application/json`` is JSON), an exact media type
    beats a wildcard, and a tie, a missing header or anything unknown gives JSON."""
    if not accept:
        return "json"
    csv_q = _quality(accept, b"text/csv", b"text/*")
    json_q = _quality(accept, b"application/json", b"application/*")
    return "csv" if csv_q > json_q else "json"


def _quality(accept: bytes, exact: bytes, family: bytes) -> float:
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
    for media in (exact, family, b"*/*"):
        if media in found:
            return found[media]
    return 0.0
