"""What can go wrong when the API reads the store, in the store's terms.

Readers and the questions asked of them raise these; none knows HTTP. ``market_api.http.errors``
turns each into its status code and error body, in one place.
"""

from __future__ import annotations

from datetime import datetime


class ReadError(Exception):
    """A question the store cannot answer now or at all; the client can act on it."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class StoreUnavailable(ReadError):
    """The store could not be read in time: a loader holds the DuckDB file, or the lake's
    catalog cannot be reached. Asking again after ``retry_after_seconds`` may succeed."""

    def __init__(self, detail: str, retry_after_seconds: int) -> None:
        super().__init__(detail)
        self.retry_after_seconds = retry_after_seconds


class UnknownSymbol(ReadError):
    """Nothing of ``stored`` is kept for ``symbol`` (several symbols: comma-separated)."""

    def __init__(self, symbol: str, stored: str = "bars") -> None:
        which = "these symbols" if "," in symbol else "this symbol"
        super().__init__(f"{symbol}: no {stored} stored for {which}")
        self.symbol = symbol
        self.stored = stored


class VersionGone(ReadError):
    """The data of ``version`` can no longer be read: the file was loaded since (it keeps only
    its latest data), or the lake's snapshot was expired. A read that must see one version
    throughout (the pages of one query) cannot go on."""

    def __init__(self, version: str | None) -> None:
        super().__init__(f"the data of version {version} is no longer stored")
        self.version = version


class HistoryNotKept(ReadError):
    """A question about the past asked of a store that keeps only its latest data (the file)."""

    def __init__(self) -> None:
        super().__init__("this store keeps only its latest data, no snapshots to travel to")


class SnapshotNotFound(ReadError):
    """No usable snapshot of the lake was committed at or before ``moment``."""

    def __init__(
        self, moment: datetime, oldest: datetime | None = None, usable: bool = False
    ) -> None:
        if usable:
            detail = f"{moment.isoformat()} is before the lake's oldest usable snapshot"
        else:
            since = "" if oldest is None else f" ({oldest.isoformat()})"
            detail = (
                f"{moment.isoformat()} is before the lake's oldest snapshot{since}; "
                "give a later time"
            )
        super().__init__(detail)
        self.moment = moment
