"""The listings path's Dagster objects: the ``listings`` asset (LISTING_STATUS, active and
delisted, into the ``listings`` table), ``listings_job``, and the ``listings_refresh`` sensor
that runs it on the first run with a universe, then every ``MARKET_LISTINGS_REFRESH_DAYS``.

A sensor rather than a cron schedule: the first refresh must come at once (the universe is
empty until then), later ones when the last good listing is old enough, and a tick must skip
while the key has fewer than the two calls left.
"""

import datetime as dt
from typing import Any

from dagster import (
    AssetExecutionContext,
    DefaultSensorStatus,
    Failure,
    MaterializeResult,
    MetadataValue,
    RunRequest,
    SensorEvaluationContext,
    SkipReason,
    asset,
    define_asset_job,
    sensor,
)

from market_pipeline.defs.automation import TRIGGER_TAG
from market_pipeline.defs.outcomes import ALPHA_VANTAGE_POOL
from market_pipeline.defs.partitions import WatchlistResource
from market_pipeline.defs.resources import AlphaVantageResource, MarketDuckDB
from market_pipeline.listings.clean import ListingAnswerError, Refreshed, refresh_listings
from market_pipeline.listings.fetch import last_fetched
from market_pipeline.listings.plan import LISTING_CALLS, refresh_due
from market_pipeline.source.errors import AlphaVantageError
from market_pipeline.store.listings import listings_table

LISTINGS = "listings"
"""The asset key, the same word as the table it fills."""
LISTINGS_JOB = "listings_job"


@asset(
    name=LISTINGS,
    group_name="market",
    kinds={"python", "parquet", "duckdb"},
    pool=ALPHA_VANTAGE_POOL,
    description=(
        "Alpha Vantage LISTING_STATUS (active and delisted: two calls), kept as received under "
        "raw/listings/, validated (rejects/listings/ with the rule), upserted into the listings "
        "table on (symbol, ipo_date). A bad answer fails the run and replaces nothing."
    ),
)
def listings(
    context: AssetExecutionContext, alpha_vantage: AlphaVantageResource, duckdb: MarketDuckDB
) -> MaterializeResult:
    try:
        refreshed = refresh_listings(
            alpha_vantage.client(), duckdb.home, listings_table(duckdb.store())
        )
    except (AlphaVantageError, ListingAnswerError) as exc:
        raise Failure(description=f"{exc}; the last good listing stays") from None
    context.log.info(
        f"listings: {refreshed.listings} listings from {refreshed.rows.get('active', 0)} active "
        f"and {refreshed.rows.get('delisted', 0)} delisted rows; "
        f"{sum(refreshed.reject_counts.values())} rejected"
    )
    return MaterializeResult(metadata=_metadata(refreshed, duckdb.database))


def _metadata(refreshed: Refreshed, database: str) -> dict[str, Any]:
    return {
        "listings": refreshed.listings,
        "active_rows": refreshed.rows.get("active", 0),
        "delisted_rows": refreshed.rows.get("delisted", 0),
        "rejected": sum(refreshed.reject_counts.values()),
        "reject_counts": refreshed.reject_counts,
        "inserted": refreshed.stats.inserted,
        "updated": refreshed.stats.updated,
        "fetched_at": refreshed.fetched_at.isoformat(timespec="seconds"),
        "table": LISTINGS,
        "database": MetadataValue.path(database),
        **{name: MetadataValue.path(path) for name, path in refreshed.paths.items()},
    }


listings_job = define_asset_job(
    LISTINGS_JOB,
    selection=[LISTINGS],
    description="LISTING_STATUS (active and delisted) into the listings table: two calls.",
)


@sensor(
    name="listings_refresh",
    job=listings_job,
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "With MARKET_UNIVERSE set: refreshes the listings asset at once when there is no good "
        "listing yet, then once it is MARKET_LISTINGS_REFRESH_DAYS old (7), when the key has "
        "the two calls left."
    ),
)
def listings_refresh(
    context: SensorEvaluationContext,
    watchlist: WatchlistResource,
    alpha_vantage: AlphaVantageResource,
) -> SkipReason | RunRequest:
    if watchlist.selection() is None:
        return SkipReason(
            "MARKET_UNIVERSE is unset: the listing is refreshed only when the listings asset "
            "is materialized by hand"
        )
    every = watchlist.listings_refresh_days
    if every == 0:
        return SkipReason("MARKET_LISTINGS_REFRESH_DAYS is 0: the listing is refreshed by hand")
    now = dt.datetime.now(dt.UTC)
    last = last_fetched(alpha_vantage.home)
    if not refresh_due(last, now, every):
        assert last is not None
        return SkipReason(
            f"the listing fetched {last:%Y-%m-%d %H:%M} UTC is fresh; the next refresh is due "
            f"from {last + dt.timedelta(days=every):%Y-%m-%d %H:%M} UTC"
        )
    calls_left = alpha_vantage.calls_left_today()
    if calls_left is not None and calls_left < LISTING_CALLS:
        return SkipReason(
            f"the listing refresh needs {LISTING_CALLS} calls (LISTING_STATUS active and "
            f"delisted); only {calls_left} left in the key's daily quota"
        )
    # One request a day: a refresh that failed is tried again the next day, not every minute.
    return RunRequest(run_key=f"listings:{now:%Y-%m-%d}", tags={TRIGGER_TAG: "listings_refresh"})
