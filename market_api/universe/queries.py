"""The SQL of ``/listings``: the filters as bound parameters, pages keyed on (symbol, ipo_date)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import cast

import duckdb

from market_core.schema import LISTINGS_COLUMNS, LISTINGS_TABLE

ListingRow = tuple[
    str, str | None, str | None, str | None, date | None, date | None, str, date, date
]
"""A ``listings`` row, in ``LISTINGS_COLUMNS`` order."""

Key = tuple[str, date]
"""Where a listing sorts: its symbol and its ipo_date."""

_CONDITIONS = {
    "status": "status = $status",
    "exchanges": "upper(exchange) IN (SELECT unnest($exchanges))",
    "asset_type": "asset_type = $asset_type",
    "on": "ipo_date <= $on AND (delisting_date IS NULL OR delisting_date > $on)",
    "search": "(starts_with(upper(symbol), upper($search)) "
    "OR starts_with(lower(name), lower($search)))",
    "after": "(symbol > $after_symbol OR (symbol = $after_symbol AND ipo_date > $after_ipo))",
}
"""Each filter's condition, used only when the filter is given (DuckDB refuses unused
parameters)."""


@dataclass(frozen=True, slots=True)
class Filters:
    """What ``/listings`` selects, normalized: each None when not asked."""

    status: str | None
    """A stored status (None: both)."""
    exchanges: tuple[str, ...] | None
    """Upper-case, sorted, each once."""
    asset_type: str | None
    on: date | None
    """Listed that day: ipo_date on or before it, no delisting on or before it."""
    search: str | None
    """A prefix of the symbol or the name, case-insensitive."""


def listings(
    cur: duckdb.DuckDBPyConnection, filters: Filters, after: Key | None, rows: int
) -> list[ListingRow]:
    """At most ``rows`` listings matching ``filters`` after ``after``, by symbol, ipo_date."""
    values: dict[str, object] = {
        "status": filters.status,
        "exchanges": None if filters.exchanges is None else list(filters.exchanges),
        "asset_type": filters.asset_type,
        "on": filters.on,
        "search": filters.search,
    }
    used = [name for name, value in values.items() if value is not None]
    if after is not None:
        values.update(after_symbol=after[0], after_ipo=after[1])
        used.append("after")
    where = " AND ".join(_CONDITIONS[name] for name in used) or "true"
    sql = (
        f"SELECT {', '.join(LISTINGS_COLUMNS)} FROM {LISTINGS_TABLE} WHERE {where} "
        "ORDER BY symbol, ipo_date LIMIT $rows"
    )
    params = {name: value for name, value in values.items() if f"${name}" in sql}
    params["rows"] = rows
    return cast(list[ListingRow], cur.execute(sql, params).fetchall())
