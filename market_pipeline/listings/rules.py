"""LISTING_STATUS rows in, (listings, rejects) out: pure polars.

The discipline of ``bars.rules``: a row that breaks a rule goes to the rejects with the first
rule it breaks, never dropped silently, and never reaches the table. Real answers hold entries
that are no ticker by any rule (``NEE 6.219``, ``SO 6.75 08-01-22``): they break the symbol
rule the API and the watchlist share, so they are rejected as ``bad_symbol``, kept in
``rejects/listings/`` for anyone who wants them.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from market_core.exchange import EXCHANGE_TZ
from market_core.schema import LISTING_ASSET_TYPES, LISTING_STATUSES, LISTINGS_KEY
from market_core.symbols import SYMBOL_RULE
from market_pipeline.listings.fetch import CONTEXT_SCHEMA
from market_pipeline.store.actions import iso_date
from market_pipeline.store.listings import LISTING_SCHEMA

REJECT_RULES: dict[str, str] = {
    "bad_row": "the row has not as many fields as the header",
    "bad_symbol": f"the symbol is no ticker ({SYMBOL_RULE})",
    "missing_ipo_date": "no IPO date: a listing is known by its symbol and its IPO date",
    "bad_ipo_date": "the IPO date is neither YYYY-MM-DD nor null",
    "bad_delisting_date": "the delisting date is neither YYYY-MM-DD nor null",
    "delisted_before_ipo": "the delisting date is before the IPO date",
    "unknown_asset_type": f"assetType is none of {', '.join(LISTING_ASSET_TYPES)}",
    "unknown_status": "status is neither Active nor Delisted",
    "wrong_state": "the row's status is not the state the answer was asked for",
    "duplicate_listing": "the same symbol and IPO date listed twice with other values (all copies)",
}

WIRE_NAMES: dict[str, str] = {
    "symbol": "symbol",
    "name": "name",
    "exchange": "exchange",
    "asset_type": "assetType",
    "ipo_date": "ipoDate",
    "delisting_date": "delistingDate",
    "status": "status",
}
"""The table's columns and the header names Alpha Vantage sends them under."""
NO_DATE = ("null", "")
"""How Alpha Vantage writes "no date" (``null``; some mirrors leave the field empty)."""
ASCII_SYMBOL = r"^[A-Za-z0-9][A-Za-z0-9.\-]{0,11}$"
"""``market_core.symbols``' rule before upper-casing, in ASCII classes only: a case-insensitive
regex would fold the Kelvin sign into K, and upper-casing first turns the sharp s into SS."""


@dataclass(frozen=True)
class Validated:
    listings: pl.DataFrame
    """``LISTING_SCHEMA`` without the seen dates, one row per (symbol, ipo_date)."""
    rejects: pl.DataFrame
    """The raw rows as received, with ``reason``."""


def _date(column: str) -> tuple[pl.Expr, pl.Expr]:
    """(the date or null, whether the text was readable as either)."""
    text = pl.col(column).str.strip_chars()
    empty = text.is_null() | text.is_in(NO_DATE)
    parsed = iso_date(column)
    return pl.when(empty).then(None).otherwise(parsed), empty | parsed.is_not_null()


def _reason(state: str, width: int) -> pl.Expr:
    """The first rule a row breaks (null: none); ``width``: the header's field count."""
    symbol = pl.col("symbol").str.strip_chars()
    ipo, ipo_ok = _date("ipoDate")
    delisted, delisted_ok = _date("delistingDate")
    status = pl.col("status").str.strip_chars().str.to_lowercase()
    asset_type = pl.col("assetType").str.strip_chars()
    checks = [
        (pl.col("fields") != width, "bad_row"),
        (~symbol.str.contains(ASCII_SYMBOL).fill_null(False), "bad_symbol"),
        (ipo_ok & ipo.is_null(), "missing_ipo_date"),
        (~ipo_ok, "bad_ipo_date"),
        (~delisted_ok, "bad_delisting_date"),
        ((delisted < ipo).fill_null(False), "delisted_before_ipo"),
        (~asset_type.is_in(LISTING_ASSET_TYPES).fill_null(False), "unknown_asset_type"),
        (~status.is_in(LISTING_STATUSES).fill_null(False), "unknown_status"),
        (status != state, "wrong_state"),
    ]
    first_broken = [pl.when(broken).then(pl.lit(rule)) for broken, rule in checks]
    return pl.coalesce(first_broken).alias("reason")


def _text(column: str) -> pl.Expr:
    text = pl.col(column).str.strip_chars()
    return pl.when(text != "").then(text)


def _typed(seen: pl.Expr) -> list[pl.Expr]:
    """The table's columns of a row that broke no rule, with the row's ``state`` and ``row``."""
    return [
        pl.col("symbol").str.strip_chars().str.to_uppercase().alias("symbol"),
        _text("name").alias("name"),
        _text("exchange").alias("exchange"),
        pl.col("assetType").str.strip_chars().alias("asset_type"),
        _date("ipoDate")[0].alias("ipo_date"),
        _date("delistingDate")[0].alias("delisting_date"),
        pl.col("status").str.strip_chars().str.to_lowercase().alias("status"),
        seen.alias("first_seen"),
        seen.alias("last_seen"),
        pl.col("state"),
        pl.col("row"),
    ]


def validate(raw: pl.DataFrame, state: str) -> Validated:
    """One answer's rows (``fetch.RAW_SCHEMA``), checked. The kept rows carry their ``state``
    and ``row`` until ``without_duplicates``; their seen dates are the New York date the
    answer was fetched on."""
    width = len([c for c in raw.columns if c not in CONTEXT_SCHEMA])
    checked = raw.with_columns(_reason(state, width))
    seen = pl.col("fetched_at").dt.convert_time_zone(str(EXCHANGE_TZ)).dt.date()
    kept = checked.filter(pl.col("reason").is_null()).select(_typed(seen))
    return Validated(kept, checked.filter(pl.col("reason").is_not_null()))


def without_duplicates(kept: pl.DataFrame, raw: pl.DataFrame) -> Validated:
    """The table's rows, each (symbol, ipo_date) once, from the kept rows of both answers.

    A listing given more than once (in one answer, or in both): exact copies keep the first;
    copies that disagree are all rejected, since neither can be trusted (their rows as received
    are found in ``raw`` by ``state`` and ``row``)."""
    values = [c for c in kept.columns if c not in ("first_seen", "last_seen", "state", "row")]
    distinct = kept.unique(subset=values, keep="first", maintain_order=True)
    clash = distinct.select(LISTINGS_KEY).is_duplicated()
    bad = distinct.filter(clash).select(LISTINGS_KEY).unique()
    conflicting = kept.join(bad, on=list(LISTINGS_KEY), how="semi").select("state", "row")
    rejects = raw.join(conflicting, on=["state", "row"], how="semi").with_columns(
        reason=pl.lit("duplicate_listing")
    )
    listings = distinct.filter(~clash).select(list(LISTING_SCHEMA)).cast(LISTING_SCHEMA)  # type: ignore[arg-type]
    return Validated(listings.sort(LISTINGS_KEY), rejects)
