"""The daily path's Dagster objects: the bars ``raw_data -> clean_data -> ohlcv_data`` and the
corporate actions ``raw_actions -> corporate_actions``, one op for all five, and ``ingest_job``.

One subsettable op so that a run over many symbols pushes each through its stages in one
process (``runs.batch``); each asset still materializes, and can be selected, on its own.
"""

from collections.abc import Iterator

from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    AssetMaterialization,
    AssetSelection,
    AssetSpec,
    AutomationCondition,
    define_asset_job,
)

from market_core.assets import ACTIONS, CLEAN, OHLCV, RAW, RAW_ACTIONS
from market_pipeline.defs.automation import INGEST_JOB
from market_pipeline.defs.checks import (
    CHECK_SPECS,
    actions_check_results,
    check_results,
    session_check_results,
    unexplained_move_result,
)
from market_pipeline.defs.outcomes import (
    PipelineConfig,
    path_op,
    rules_of,
)
from market_pipeline.defs.partitions import WatchlistResource, symbols_partitions
from market_pipeline.defs.planned import fail_if_any
from market_pipeline.defs.resources import AlphaVantageResource, MarketDuckDB
from market_pipeline.defs.streamed import Streamed
from market_pipeline.defs.vendor_usage import report_calls_today
from market_pipeline.runs.batch import BatchRunner, BatchSettings
from market_pipeline.runs.outcome import ActionsLoaded, Cleaned

GROUP = "market"

DAILY_SPECS = [
    AssetSpec(
        RAW,
        group_name=GROUP,
        kinds={"python", "parquet"},
        skippable=True,
        description="Alpha Vantage TIME_SERIES_DAILY answers as received, one Parquet per symbol.",
    ),
    AssetSpec(
        CLEAN,
        deps=[RAW],
        automation_condition=AutomationCondition.eager(),  # follows raw_data: automation.py
        group_name=GROUP,
        kinds={"polars", "parquet"},
        skippable=True,
        description="Typed, de-duplicated, validated daily bars; impossible rows go to rejects/.",
    ),
    AssetSpec(
        OHLCV,
        deps=[CLEAN],
        automation_condition=AutomationCondition.eager(),
        group_name=GROUP,
        kinds={"duckdb"},
        skippable=True,
        description="The ohlcv_data table in market_data.duckdb, upserted on (symbol, timestamp).",
    ),
    AssetSpec(
        RAW_ACTIONS,
        group_name=GROUP,
        kinds={"python", "parquet"},
        skippable=True,
        description=(
            "Alpha Vantage SPLITS and DIVIDENDS answers as received, two Parquet files per "
            "symbol. Fetched after every symbol's bars, on a symbol's first load, then weekly, "
            "and at once when clean_data flags a large move that no known action explains; "
            "a symbol not due is skipped."
        ),
    ),
    AssetSpec(
        ACTIONS,
        deps=[RAW_ACTIONS],
        automation_condition=AutomationCondition.eager(),
        group_name=GROUP,
        kinds={"duckdb"},
        skippable=True,
        description=(
            "The corporate_actions table in market_data.duckdb, one row per (symbol, ex_date, "
            "kind), upserted; events that vanish from a later full answer are deleted."
        ),
    ),
]


@path_op("symbol_pipeline", DAILY_SPECS, CHECK_SPECS)
def symbol_pipeline(
    context: AssetExecutionContext,
    config: PipelineConfig,
    alpha_vantage: AlphaVantageResource,
    duckdb: MarketDuckDB,
    watchlist: WatchlistResource,
) -> Iterator[AssetMaterialization | AssetCheckResult]:
    stages = {key.to_user_string() for key in context.selected_asset_keys}
    streamed = Streamed()
    runner = BatchRunner(
        home=duckdb.home,
        client=alpha_vantage.client() if stages & {RAW, RAW_ACTIONS} else None,
        duckdb=duckdb.store() if stages & {OHLCV, ACTIONS} else None,
        stages=sorted(stages),
        settings=BatchSettings(
            outputsize=alpha_vantage.outputsize,  # type: ignore[arg-type]
            rules=rules_of(config, watchlist),
            load_batch_symbols=config.load_batch_symbols,
            load_batch_rows=config.load_batch_rows,
        ),
        log=streamed.log,
        calls_left=alpha_vantage.calls_left_today,
        report=streamed.result,
        stopped=streamed.stopped,
    )
    symbols = list(context.partition_keys)
    outcome = yield from streamed.run(context, lambda: runner.run(symbols))
    report_calls_today(context, alpha_vantage)
    checks = context.selected_asset_check_keys
    if CLEAN in stages:
        cleaned = outcome.results(Cleaned).values()
        yield from check_results(
            checks,
            {c.symbol: c.reject_counts for c in cleaned},
            {c.symbol: c.flag_counts for c in cleaned},
        )
        yield from unexplained_move_result(checks, outcome.unexplained_moves, len(cleaned))
    if ACTIONS in stages:
        loaded = outcome.results(ActionsLoaded).values()
        yield from actions_check_results(checks, {a.symbol: a.reject_counts for a in loaded})
    if OHLCV in stages:  # the run's symbols, after the load, whatever failed besides
        yield from session_check_results(checks, duckdb.store(), context.log.warning, symbols)
    fail_if_any(context, outcome)


ingest_job = define_asset_job(
    INGEST_JOB,
    selection=AssetSelection.assets(symbol_pipeline),
    partitions_def=symbols_partitions,
    description=(
        "raw_data -> clean_data -> ohlcv_data, and raw_actions -> corporate_actions where due, "
        "for a range of symbols, in one run."
    ),
)
