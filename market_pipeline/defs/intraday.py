"""The intraday path's Dagster objects: ``raw_intraday -> clean_intraday -> intraday_data``, one
op for the three (``runs.intraday``), and ``intraday_job``, which the intraday sensor runs."""

from collections.abc import Iterator

from dagster import (
    AssetExecutionContext,
    AssetMaterialization,
    AssetSelection,
    AssetSpec,
    Failure,
    define_asset_job,
)

from market_core.assets import CLEAN_INTRADAY, INTRADAY, RAW_INTRADAY
from market_pipeline.defs.intraday_sensor import INTRADAY_JOB
from market_pipeline.defs.outcomes import (
    PipelineConfig,
    materializations,
    path_op,
    rules_of,
)
from market_pipeline.defs.partitions import WatchlistResource, symbols_partitions
from market_pipeline.defs.planned import fail_if_any
from market_pipeline.defs.resources import AlphaVantageResource, MarketDuckDB
from market_pipeline.runs.intraday import IntradayRunner, IntradaySettings

INTRADAY_GROUP = "intraday"
INTRADAY_SPECS = [
    AssetSpec(
        RAW_INTRADAY,
        group_name=INTRADAY_GROUP,
        kinds={"python", "parquet"},
        skippable=True,
        description=(
            "Alpha Vantage TIME_SERIES_INTRADAY answers as received (as traded, interval "
            "ALPHAVANTAGE_INTRADAY_INTERVAL), one Parquet per symbol and interval. A premium "
            "endpoint: a free key's refusal fails the run once and is remembered for the key."
        ),
    ),
    AssetSpec(
        CLEAN_INTRADAY,
        deps=[RAW_INTRADAY],
        group_name=INTRADAY_GROUP,
        kinds={"polars", "parquet"},
        skippable=True,
        description=(
            "Validated intraday bars: the daily rules, plus the bar must start inside its day's "
            "NYSE session; rejected rows go to rejects/intraday/<interval>/."
        ),
    ),
    AssetSpec(
        INTRADAY,
        deps=[CLEAN_INTRADAY],
        group_name=INTRADAY_GROUP,
        kinds={"duckdb"},
        skippable=True,
        description=(
            "The ohlcv_intraday table, upserted on (symbol, interval, timestamp); timestamps "
            "are the bars' starts, New York time."
        ),
    ),
]
INTERVAL_OFF = (
    "ALPHAVANTAGE_INTRADAY_INTERVAL is off: set it to 1min, 5min, 15min, 30min or 60min "
    "(TIME_SERIES_INTRADAY needs a premium Alpha Vantage key, or no key for the offline sample) "
    "to fetch intraday bars"
)


@path_op("intraday_pipeline", INTRADAY_SPECS)
def intraday_pipeline(
    context: AssetExecutionContext,
    config: PipelineConfig,
    alpha_vantage: AlphaVantageResource,
    duckdb: MarketDuckDB,
    watchlist: WatchlistResource,
) -> Iterator[AssetMaterialization]:
    """Run by the intraday sensor during the session; by hand with the interval off, it fails
    saying so and fetches nothing."""
    if not alpha_vantage.intraday_on:
        raise Failure(description=INTERVAL_OFF)
    stages = {key.to_user_string() for key in context.selected_asset_keys}
    runner = IntradayRunner(
        home=duckdb.home,
        client=alpha_vantage.client() if RAW_INTRADAY in stages else None,
        store=duckdb.store() if INTRADAY in stages else None,
        stages=sorted(stages),
        settings=IntradaySettings(
            alpha_vantage.intraday_interval,
            alpha_vantage.extended_hours,
            rules_of(config, watchlist),
        ),
        log=context.log.info,
    )
    outcome = runner.run(list(context.partition_keys))
    yield from materializations(outcome)
    fail_if_any(context, outcome)


intraday_job = define_asset_job(
    INTRADAY_JOB,
    selection=AssetSelection.assets(intraday_pipeline),
    partitions_def=symbols_partitions,
    description=(
        "raw_intraday -> clean_intraday -> intraday_data for a range of symbols, in one run "
        "(the intraday sensor's, during the session, when ALPHAVANTAGE_INTRADAY_INTERVAL is set)."
    ),
)
