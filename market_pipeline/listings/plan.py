"""When the listing is refreshed, and what it tells the quota plan: which delisted symbols are
done, and which symbols go last. Pure functions: the caller passes the files' facts and the
clock in (``history.raw_fetched_at``, ``fetch.last_fetched``).

A delisted symbol's history is complete once it was fetched on a day after its delisting date:
no bar can come any more, so it is never fetched again (a call saved every update). Until then
it loads within the quota plan after every active symbol, the most recently delisted first and
the oldest last. A ticker reused by a later company is judged by its newest listing: while the
later company trades, the symbol is active.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import polars as pl

from market_core.exchange import EXCHANGE_TZ

LISTING_CALLS = 2
"""A refresh: LISTING_STATUS for the active and for the delisted listings."""
REFRESH_DAYS = 7


def refresh_due(last_fetched: dt.datetime | None, now: dt.datetime, every_days: int) -> bool:
    """No good listing yet, or the last one is ``every_days`` old (0: never by itself)."""
    if every_days <= 0:
        return False
    return last_fetched is None or now - last_fetched >= dt.timedelta(days=every_days)


@dataclass(frozen=True)
class SymbolListing:
    """A symbol's newest listing (the latest IPO date), as far as the plan reads it."""

    symbol: str
    status: str
    delisting_date: dt.date | None

    @property
    def delisted(self) -> bool:
        return self.status == "delisted"


def newest_listings(
    listings: pl.DataFrame | None, symbols: Collection[str] | None = None
) -> dict[str, SymbolListing]:
    """Each symbol's newest listing (of ``symbols`` only, if given), by symbol; none without a
    listing."""
    if listings is None:
        return {}
    if symbols is not None:
        listings = listings.filter(pl.col("symbol").is_in(list(symbols)))
    newest = newest_rows(listings)
    return {
        symbol: SymbolListing(symbol, status, delisting_date)
        for symbol, status, delisting_date in newest.select(
            "symbol", "status", "delisting_date"
        ).iter_rows()
    }


def newest_rows(listings: pl.DataFrame) -> pl.DataFrame:
    """Each symbol's newest listing (the latest IPO date), one row a symbol, by symbol."""
    return listings.sort("symbol", "ipo_date").group_by("symbol", maintain_order=True).last()


def in_priority_order(newest: pl.DataFrame) -> list[str]:
    """The symbols of ``newest_rows`` in ``priority``'s order: active first (by symbol), then
    the delisted ones, the most recent delisting first."""
    delisted = pl.col("status") == "delisted"
    keys = [delisted, pl.when(delisted).then(pl.col("delisting_date")), pl.col("symbol")]
    ordered = newest.sort(keys, descending=[False, True, False], nulls_last=True)
    return ordered.get_column("symbol").to_list()


def history_complete(listing: SymbolListing | None, fetched_at: dt.datetime | None) -> bool:
    """Fetched on a New York day after its delisting date: nothing more to load."""
    if listing is None or not listing.delisted or listing.delisting_date is None:
        return False
    if fetched_at is None:
        return False
    return fetched_at.astimezone(EXCHANGE_TZ).date() > listing.delisting_date


def completed(
    listings: Mapping[str, SymbolListing], fetched: Mapping[str, dt.datetime]
) -> list[str]:
    """The symbols whose history is complete, in ``listings``' order."""
    return [s for s, listing in listings.items() if history_complete(listing, fetched.get(s))]


def priority(listing: SymbolListing | None) -> tuple[int, int]:
    """A sort key: active (or not listed) first, then delisted, the oldest delisting last."""
    if listing is None or not listing.delisted:
        return (0, 0)
    day = listing.delisting_date
    return (1, -day.toordinal() if day is not None else 0)
