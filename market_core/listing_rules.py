"""Which listing a symbol's bars belong to: one rule for the API (``/instruments``) and the
pipeline's session checks, so that both count the same missing sessions."""

from __future__ import annotations

from collections.abc import Sequence

from market_core.schema import LISTINGS_TABLE


def applying_listing_sql(columns: Sequence[str]) -> str:
    """A query of one listing per symbol, with ``columns`` of it, over a ``spans`` relation
    (``symbol``, ``first_bar``) the caller defines.

    A reused ticker has several listings: the latest listed on or before the first bar, else
    the earliest. A row without an ipo_date counts as listed since always (it bounds nothing).
    """
    picked = ", ".join(f"l.{column}" for column in columns)
    return f"""
SELECT {", ".join(columns)} FROM (
    SELECT {picked}, s.first_bar, coalesce(l.ipo_date, DATE '0001-01-01') AS since
    FROM {LISTINGS_TABLE} l JOIN spans s USING (symbol)
)
QUALIFY row_number() OVER (
    PARTITION BY symbol
    ORDER BY since <= first_bar DESC,
             CASE WHEN since <= first_bar THEN since END DESC NULLS LAST,
             since
) = 1
"""
