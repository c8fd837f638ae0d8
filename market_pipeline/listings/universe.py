"""The universe: the listings ``MARKET_UNIVERSE`` selects, by exchange, asset type and status.

Selected symbols are ordered for the quota plan (``plan.priority``): active ones first, then
the delisted ones, the most recently delisted first. A symbol is selected when any of its
listings matches: with ``status=delisted`` a ticker reused by a trading company is selected
for its earlier company's listing.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from market_core.schema import LISTING_ASSET_TYPES, LISTING_STATUSES
from market_pipeline.listings.plan import in_priority_order, newest_rows

EXCHANGES: tuple[str, ...] = ("NYSE", "NASDAQ", "NYSE ARCA", "NYSE MKT", "BATS")
"""The exchanges LISTING_STATUS names (upper-case). A new one needs adding here before
``MARKET_UNIVERSE`` accepts it: a misspelt exchange must not select nothing silently."""


@dataclass(frozen=True)
class Universe:
    """Empty ``exchanges`` or ``asset_types``: every one. ``statuses``: active, delisted or
    both (``all``)."""

    exchanges: frozenset[str] = frozenset()
    asset_types: frozenset[str] = frozenset()
    statuses: frozenset[str] = frozenset({"active"})

    def __post_init__(self) -> None:
        unknown = (
            (self.exchanges - set(EXCHANGES))
            | (self.asset_types - set(LISTING_ASSET_TYPES))
            | (self.statuses - set(LISTING_STATUSES))
        )
        if unknown or not self.statuses:
            raise ValueError(f"not a universe: {sorted(unknown) or 'no status'}")

    @property
    def with_delisted(self) -> bool:
        return "delisted" in self.statuses

    def describe(self) -> str:
        """``exchange=NYSE,NASDAQ;asset_type=Stock;status=active``, every key spelt out."""
        status = "all" if self.statuses == set(LISTING_STATUSES) else next(iter(self.statuses))
        parts = [
            f"exchange={','.join(sorted(self.exchanges)) or 'any'}",
            f"asset_type={','.join(sorted(self.asset_types)) or 'any'}",
            f"status={status}",
        ]
        return ";".join(parts)

    def matches(self) -> pl.Expr:
        """The listings this universe selects, as a filter on the ``listings`` columns."""
        selected = pl.col("status").is_in(sorted(self.statuses))
        if self.exchanges:
            selected &= pl.col("exchange").str.to_uppercase().is_in(sorted(self.exchanges))
        if self.asset_types:
            selected &= pl.col("asset_type").is_in(sorted(self.asset_types))
        return selected

    def select(self, listings: pl.DataFrame) -> list[str]:
        """The symbols of the matching listings: active first (by symbol), then delisted, the
        most recently delisted first."""
        matching = listings.filter(self.matches()).select("symbol")
        return in_priority_order(newest_rows(listings).join(matching, on="symbol", how="semi"))
