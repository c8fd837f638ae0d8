"""Stage 2 of ``listings``: both answers checked, row by row and as a whole, then loaded.

A row that breaks a rule (``rules``) goes to the rejects with its reason. An answer as a whole
is bad when it has no row, when more than ``MAX_REJECTED_SHARE`` of its rows break a rule, or
when it holds fewer than ``MIN_ROWS_SHARE`` of the rows of the last good answer of its state
(a listing does not halve in a week; an answer cut short does). A bad answer raises
``ListingAnswerError`` before anything is written or loaded: the last good listing stays, in
``raw/listings/`` and in the table.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

import polars as pl

from market_core.home import DataHome
from market_core.store import LoadStats
from market_pipeline.listings.fetch import fetch_listings, stored_rows, write_answers
from market_pipeline.listings.rules import validate, without_duplicates
from market_pipeline.source.client import AlphaVantageClient, ListingState
from market_pipeline.store.listings import ListingsTable

MAX_REJECTED_SHARE = 0.5
"""Real answers break a rule in a few rows of twelve thousand (the odd symbols); an answer in
another format breaks one in nearly every row."""
MIN_ROWS_SHARE = 0.5


class ListingAnswerError(Exception):
    """A LISTING_STATUS answer too broken to replace the last good listing."""


@dataclass(frozen=True)
class CleanListings:
    listings: pl.DataFrame
    """The table's rows, each (symbol, ipo_date) once."""
    rejects: dict[ListingState, pl.DataFrame]
    """Per answer, its rows as received that broke a rule, with ``reason``."""
    rows: dict[ListingState, int]

    @property
    def reject_counts(self) -> dict[str, int]:
        """Rejected rows per rule, over both answers."""
        reasons = pl.concat([r.select("reason") for r in self.rejects.values()])
        return dict(reasons.group_by("reason").len().sort("reason").iter_rows())


def _check_answer(state: ListingState, rows: int, rejected: int, last_good: int | None) -> None:
    who = f"LISTING_STATUS state={state}"
    if rows == 0:
        raise ListingAnswerError(f"{who}: the answer lists nothing; kept the last good listing")
    if rejected > MAX_REJECTED_SHARE * rows:
        raise ListingAnswerError(
            f"{who}: {rejected} of its {rows} rows break a rule (more than "
            f"{MAX_REJECTED_SHARE:.0%}); kept the last good listing"
        )
    if last_good is not None and rows < MIN_ROWS_SHARE * last_good:
        raise ListingAnswerError(
            f"{who}: the answer holds {rows} rows, the last good one {last_good} (less than "
            f"{MIN_ROWS_SHARE:.0%} of it looks cut short); kept the last good listing"
        )


def clean_listings(
    raws: Mapping[ListingState, pl.DataFrame], last_good: Mapping[ListingState, int]
) -> CleanListings:
    """The listing of both answers, or ``ListingAnswerError`` for the first bad one.
    ``last_good``: the row count of each state's last good answer."""
    validated = {state: validate(raw, state) for state, raw in raws.items()}
    for state, checked in validated.items():
        _check_answer(state, raws[state].height, checked.rejects.height, last_good.get(state))
    kept = pl.concat([v.listings for v in validated.values()])
    deduplicated = without_duplicates(kept, pl.concat(list(raws.values()), how="diagonal"))
    duplicates = deduplicated.rejects
    rejects = {
        state: pl.concat(
            [checked.rejects, duplicates.filter(pl.col("state") == state)], how="diagonal"
        ).sort("row")
        for state, checked in validated.items()
    }
    rows = {state: raw.height for state, raw in raws.items()}
    return CleanListings(deduplicated.listings, rejects, rows)


@dataclass(frozen=True)
class Refreshed:
    """What one refresh did: rows per answer, rejects per rule, the load, the files."""

    rows: dict[ListingState, int]
    reject_counts: dict[str, int]
    listings: int
    stats: LoadStats
    paths: dict[str, str]
    fetched_at: dt.datetime


def refresh_listings(client: AlphaVantageClient, home: DataHome, table: ListingsTable) -> Refreshed:
    """Fetch both answers, check them, load the listing, then keep the answers as the last
    good ones. A bad answer (or a failed call) raises before anything is written or loaded."""
    raws = fetch_listings(client)
    cleaned = clean_listings(raws, stored_rows(home))
    stats = table.load(cleaned.listings)
    paths = write_answers(home, raws, cleaned.rejects)
    fetched_at = min(raw.get_column("fetched_at").min() for raw in raws.values())  # type: ignore[type-var]
    return Refreshed(
        rows=cleaned.rows,
        reject_counts=cleaned.reject_counts,
        listings=cleaned.listings.height,
        stats=stats,
        paths=paths,
        fetched_at=fetched_at,  # type: ignore[arg-type]
    )
