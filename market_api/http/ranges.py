"""Single byte ranges (RFC 9110 section 14): what a Parquet reader on a URL asks for.

polars' ``read_parquet(url)`` reads the footer with a suffix range (``bytes=-262144``) and then
one range per row group, and refuses an answer that ignores ``Range``. Only one range per request
is served; a list of ranges, or any other unit, is ignored and the whole answer sent, as the RFC
allows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_RANGE = re.compile(rb"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*")


@dataclass(frozen=True, slots=True)
class ByteRange:
    """``first``-``last`` inclusive (``last`` None: to the end), or the last ``suffix`` bytes."""

    first: int | None
    last: int | None
    suffix: int | None = None

    def resolve(self, length: int) -> tuple[int, int] | None:
        """The inclusive ``(start, end)`` of an answer of ``length`` bytes; None if the range
        cannot be satisfied (416)."""
        if self.suffix is not None:
            if self.suffix == 0 or length == 0:
                return None
            return max(0, length - self.suffix), length - 1
        assert self.first is not None
        if self.first >= length:
            return None
        end = length - 1 if self.last is None else min(self.last, length - 1)
        return self.first, end


def parse_range(header: bytes | None) -> ByteRange | None:
    """The one range of a ``Range`` header, or None for no header or one not served."""
    if not header:
        return None
    match = _RANGE.fullmatch(header)
    if match is None:
        return None
    first, last = match.groups()
    if not first:
        return ByteRange(None, None, int(last)) if last else None
    start, end = int(first), int(last) if last else None
    if end is not None and end < start:
        return None
    return ByteRange(start, end)


@dataclass
class RangeSlicer:
    """Keeps, of a body fed in pieces, only the bytes ``wanted`` asks for: the answer is sliced
    as it streams, so a range of a large answer costs memory for the range alone."""

    wanted: ByteRange
    length: int = 0
    _kept: bytearray = field(default_factory=bytearray)
    _kept_from: int = 0
    """The body offset of ``_kept[0]``."""

    def feed(self, chunk: bytes) -> None:
        start, self.length = self.length, self.length + len(chunk)
        wanted = self.wanted
        if wanted.suffix is not None:
            self._kept += chunk
            excess = len(self._kept) - wanted.suffix
            if excess > 0:
                del self._kept[:excess]
                self._kept_from += excess
            return
        assert wanted.first is not None
        low = max(wanted.first, start)
        high = self.length if wanted.last is None else min(wanted.last + 1, self.length)
        if low < high:
            if not self._kept:
                self._kept_from = low
            self._kept += chunk[low - start : high - start]

    def result(self) -> tuple[int, int, bytes] | None:
        """``(start, end, bytes)`` once the whole body was fed; None if unsatisfiable."""
        span = self.wanted.resolve(self.length)
        if span is None:
            return None
        start, end = span
        offset = start - self._kept_from
        return start, end, bytes(self._kept[offset : offset + end - start + 1])
