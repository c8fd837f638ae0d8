"""The asset graph ``raw_data -> clean_data -> ohlcv_data``, partitioned by symbol.

The three assets share one op (a subsettable multi-asset) so that a run over many symbols pushes
each symbol through its stages in one process and a failed symbol never holds back the others;
each asset still materializes, and can be selected, on its own. The stage logic lives in
``market_pipeline.stages``; the loop over symbols in ``market_pipeline.batch``.
"""

from collections.abc import Iterator
from typing import Any, assert_never

import polars as pl
from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    AssetMaterialization,
    AssetSpec,
    AutomationCondition,
    BackfillPolicy,
    Config,
    Failure,
    MetadataValue,
    multi_asset,
)
from pydantic import Field

from market_core.assets import CLEAN, OHLCV, RAW
from market_pipeline.batch import BatchOutcome, BatchRunner, BatchSettings
from market_pipeline.checks import CHECK_SPECS, check_results
from market_pipeline.outcome import Cleaned, Loaded, StageResult
from market_pipeline.partitions import WatchlistResource, symbols_partitions
from market_pipeline.resources.alpha_vantage import AlphaVantageResource
from market_pipeline.resources.storage import MarketDuckDB
from market_pipeline.stages.raw import RawResult
from market_pipeline.validation import Rules

ALPHA_VANTAGE_POOL = "alpha_vantage"
GROUP = "market"

ASSET_SPECS = [
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
]


class PipelineConfig(Config):
    move_threshold: float = Field(
        default=0.4, description="Flag a bar whose close moved more than this fraction in a day."
    )
    volume_ratio: float = Field(
        default=100.0, description="Flag a volume this many times off its neighbours' median."
    )
    load_batch_symbols: int = Field(
        default=1000, description="At most this many symbols per DuckDB transaction."
    )
    load_batch_rows: int = Field(
        default=500_000,
        description="At most about this many bars per DuckDB transaction (the API waits for it).",
    )


def _rules(config: PipelineConfig, watchlist: WatchlistResource) -> Rules:
    return Rules(config.move_threshold, config.volume_ratio, watchlist.start_date())


def _preview(bars: pl.DataFrame) -> str:
    """The newest bars as a Markdown table, for the Dagster UI."""
    bars = bars.with_columns(pl.col("timestamp").dt.date())
    lines = ["| " + " | ".join(bars.columns) + " |", "|" + "---|" * bars.width]
    lines += ["| " + " | ".join("" if v is None else str(v) for v in row) + " |"
              for row in bars.iter_rows()]  # fmt: skip
    return "\n".join(lines)


def _metadata(result: StageResult) -> dict[str, Any]:
    """What the Dagster UI shows for one symbol's materialization of one stage."""
    span = {"rows": result.rows, "first_date": result.first_date, "last_date": result.last_date}
    match result:
        case RawResult():
            return span | {"outputsize": result.outputsize, "source": result.source,
                           "path": MetadataValue.path(result.path)}  # fmt: skip
        case Cleaned():
            return span | {
                "rejected": result.rejected,
                "flagged": result.flagged,
                "outside_history_window": result.outside_history_window,
                "path": MetadataValue.path(result.path),
                "rejects_path": MetadataValue.path(result.rejects_path),
                "preview": MetadataValue.md(_preview(result.newest)),
            }
        case Loaded():
            return span | {"table": result.table, "database": MetadataValue.path(result.database),
                           "batch_inserted": result.batch_inserted,
                           "batch_revised": result.batch_revised}  # fmt: skip
    assert_never(result)


def _failure(outcome: BatchOutcome) -> Failure:
    """One failure for the step, naming every failed symbol, so that a retry can take just them."""
    failed = sorted(outcome.failures)
    return Failure(
        description=(
            f"{len(failed)} of {len(outcome.symbols)} symbols failed (the others are materialized; "
            f"re-run just these): " + "; ".join(outcome.failures[s].message for s in failed)
        )[:4000],
        metadata={
            "failed_symbols": failed,
            "failed": len(failed),
            "succeeded": len(outcome.symbols) - len(failed),
        },
    )


@multi_asset(
    name="symbol_pipeline",
    specs=ASSET_SPECS,
    check_specs=CHECK_SPECS,
    can_subset=True,
    partitions_def=symbols_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    pool=ALPHA_VANTAGE_POOL,
)
def symbol_pipeline(
    context: AssetExecutionContext,
    config: PipelineConfig,
    alpha_vantage: AlphaVantageResource,
    duckdb: MarketDuckDB,
    watchlist: WatchlistResource,
) -> Iterator[AssetMaterialization | AssetCheckResult]:
    stages = {key.to_user_string() for key in context.selected_asset_keys}
    symbols = list(context.partition_keys)
    runner = BatchRunner(
        home=duckdb.home,
        client=alpha_vantage.client() if RAW in stages else None,
        duckdb=duckdb if OHLCV in stages else None,
        stages=sorted(stages),
        settings=BatchSettings(
            outputsize=alpha_vantage.outputsize,  # type: ignore[arg-type]
            rules=_rules(config, watchlist),
            load_batch_symbols=config.load_batch_symbols,
            load_batch_rows=config.load_batch_rows,
        ),
        log=context.log.info,
    )
    outcome = runner.run(symbols)
    for stage, results in outcome.materialized.items():
        for symbol, result in results.items():
            yield AssetMaterialization(
                asset_key=stage, partition=symbol, metadata=_metadata(result)
            )
    if CLEAN in stages:
        cleaned = outcome.results(Cleaned).values()
        yield from check_results(
            context.selected_asset_check_keys,
            {c.symbol: c.reject_counts for c in cleaned},
            {c.symbol: c.flag_counts for c in cleaned},
        )
    if outcome.failures:
        raise _failure(outcome)
