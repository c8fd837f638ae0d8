"""The asset graph, partitioned by symbol: the bars ``raw_data -> clean_data -> ohlcv_data``,
the corporate actions ``raw_actions -> corporate_actions`` and, in a graph of their own, the
intraday bars ``raw_intraday -> clean_intraday -> intraday_data``.

The five assets share one op (a subsettable multi-asset) so that a run over many symbols pushes
each symbol through its stages in one process and a failed symbol never holds back the others;
each asset still materializes, and can be selected, on its own. The actions assets are skipped
for a symbol whose actions are not due (``market_pipeline.actions.policy``): no materialization,
so the UI's last materialization of ``raw_actions`` is the last fetch. The stage logic lives in
``market_pipeline.stages``; the loop over symbols in ``market_pipeline.runs.batch``.
"""

from collections.abc import Collection, Iterator
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

from market_core.assets import (
    ACTIONS,
    CLEAN,
    CLEAN_INTRADAY,
    INTRADAY,
    OHLCV,
    RAW,
    RAW_ACTIONS,
    RAW_INTRADAY,
)
from market_core.schema import INTRADAY_TABLE
from market_pipeline.bars.rules import Rules
from market_pipeline.daily.fetch import RawResult
from market_pipeline.defs.checks import (
    CHECK_SPECS,
    actions_check_results,
    check_results,
    unexplained_move_result,
)
from market_pipeline.defs.partitions import WatchlistResource, symbols_partitions
from market_pipeline.runs.batch import BatchOutcome, BatchRunner, BatchSettings
from market_pipeline.runs.intraday import IntradayOutcome, IntradayRun, IntradaySettings
from market_pipeline.runs.outcome import (
    ActionsFetched,
    ActionsLoaded,
    Cleaned,
    Loaded,
    NotAttempted,
    StageResult,
    SymbolFailure,
)
from market_pipeline.source.client import AlphaVantageResource
from market_pipeline.store.duckdb_file import MarketDuckDB

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
    match result:
        case RawResult():
            return _span(result) | {"outputsize": result.outputsize, "source": result.source,
                                    "path": MetadataValue.path(result.path)}  # fmt: skip
        case Cleaned():
            return _span(result) | {
                "rejected": result.rejected,
                "flagged": result.flagged,
                "outside_history_window": result.outside_history_window,
                "path": MetadataValue.path(result.path),
                "rejects_path": MetadataValue.path(result.rejects_path),
                "preview": MetadataValue.md(_preview(result.newest)),
            }
        case Loaded():
            return _span(result) | {"table": result.table,
                                    "database": MetadataValue.path(result.database),
                                    "batch_inserted": result.batch_inserted,
                                    "batch_revised": result.batch_revised}  # fmt: skip
        case ActionsFetched():
            return {
                "splits": result.splits,
                "dividends": result.dividends,
                "reason": result.reason,
                "source": result.source,
                "splits_path": MetadataValue.path(result.splits_path),
                "dividends_path": MetadataValue.path(result.dividends_path),
            }
        case ActionsLoaded():
            return {
                "events": result.events,
                "splits": result.splits,
                "dividends": result.dividends,
                "newest_ex_date": result.newest_ex_date or "",
                "rejected": result.rejected,
                "vanished": len(result.vanished),
                "vanished_events": list(result.vanished),
                "rejects_path": MetadataValue.path(result.rejects_path),
                "table": result.table,
                "database": MetadataValue.path(result.database),
                "batch_inserted": result.batch_inserted,
                "batch_revised": result.batch_updated,
                "batch_deleted": result.batch_deleted,
            }
    assert_never(result)


def _span(result: RawResult | Cleaned | Loaded) -> dict[str, Any]:
    return {"rows": result.rows, "first_date": result.first_date, "last_date": result.last_date}


def _actions_only(failure: SymbolFailure) -> bool:
    """The symbol's bars are loaded; only its corporate actions failed or were not reached."""
    if isinstance(failure, NotAttempted):
        return failure.actions_only
    return failure.stage in (RAW_ACTIONS, ACTIONS)


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
            "actions_only_failed": [s for s in failed if _actions_only(outcome.failures[s])],
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
        client=alpha_vantage.client() if stages & {RAW, RAW_ACTIONS} else None,
        duckdb=duckdb if stages & {OHLCV, ACTIONS} else None,
        stages=sorted(stages),
        settings=BatchSettings(
            outputsize=alpha_vantage.outputsize,  # type: ignore[arg-type]
            rules=_rules(config, watchlist),
            load_batch_symbols=config.load_batch_symbols,
            load_batch_rows=config.load_batch_rows,
        ),
        log=context.log.info,
        calls_left=alpha_vantage.calls_left_today,
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
        yield from unexplained_move_result(
            context.selected_asset_check_keys, outcome.unexplained_moves, len(cleaned)
        )
    if ACTIONS in stages:
        loaded = outcome.results(ActionsLoaded).values()
        yield from actions_check_results(
            context.selected_asset_check_keys, {a.symbol: a.reject_counts for a in loaded}
        )
    if outcome.failures:
        raise _failure(outcome)


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


def _intraday_metadata(stage: str, symbol: str, outcome: IntradayOutcome) -> dict[str, Any]:
    if stage == RAW_INTRADAY:
        raw = outcome.raw[symbol]
        return {"rows": raw.rows, "first": raw.first, "last": raw.last, "interval": raw.interval,
                "outputsize": raw.outputsize, "source": raw.source,
                "path": MetadataValue.path(raw.path)}  # fmt: skip
    if stage == CLEAN_INTRADAY:
        clean = outcome.clean[symbol]
        bars = clean.validated.clean
        return {
            "rows": bars.height,
            "first": str(bars.get_column("timestamp").min()),
            "last": str(bars.get_column("timestamp").max()),
            "interval": clean.interval,
            "rejected": clean.validated.rejects.height,
            "reject_counts": clean.validated.reject_counts,
            "flagged": int(bars.get_column("flags").is_not_null().sum()),
            "path": MetadataValue.path(clean.path),
            "rejects_path": MetadataValue.path(clean.rejects_path),
        }
    stats = outcome.stats
    assert stats is not None
    return {"rows": outcome.loaded[symbol], "table": INTRADAY_TABLE,
            "batch_inserted": stats.inserted, "batch_revised": stats.updated}  # fmt: skip


def _intraday_failure(outcome: IntradayOutcome) -> Failure:
    failed = sorted(outcome.failures)
    if outcome.refused:
        head = (
            "Alpha Vantage refused TIME_SERIES_INTRADAY for this key (a premium endpoint): "
            "intraday bars need a premium key. The refusal is remembered: the intraday sensor "
            "stops asking until the key changes or a run by hand succeeds. "
        )
    else:
        head = f"{len(failed)} of {len(outcome.symbols)} symbols failed (the others loaded): "
    return Failure(
        description=(head + "; ".join(outcome.failures[s] for s in failed))[:4000],
        metadata={
            "failed_symbols": failed,
            "failed": len(failed),
            "succeeded": len(outcome.symbols) - len(failed),
        },
    )


@multi_asset(
    name="intraday_pipeline",
    specs=INTRADAY_SPECS,
    can_subset=True,
    partitions_def=symbols_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    pool=ALPHA_VANTAGE_POOL,
)
def intraday_pipeline(
    context: AssetExecutionContext,
    config: PipelineConfig,
    alpha_vantage: AlphaVantageResource,
    duckdb: MarketDuckDB,
    watchlist: WatchlistResource,
) -> Iterator[AssetMaterialization]:
    """The intraday path, one run over many symbols (``stages.intraday_run``). Run by the
    intraday sensor during the session; with ``ALPHAVANTAGE_INTRADAY_INTERVAL=off`` a run by
    hand fails saying so, and nothing is fetched."""
    if not alpha_vantage.intraday_on:
        raise Failure(
            description="ALPHAVANTAGE_INTRADAY_INTERVAL is off: set it to 1min, 5min, 15min, "
            "30min or 60min (TIME_SERIES_INTRADAY needs a premium Alpha Vantage key, or no key "
            "for the offline sample) to fetch intraday bars"
        )
    stages = {key.to_user_string() for key in context.selected_asset_keys}
    run = IntradayRun(
        home=duckdb.home,
        client=alpha_vantage.client() if RAW_INTRADAY in stages else None,
        store=duckdb if INTRADAY in stages else None,
        stages=stages,
        settings=IntradaySettings(
            alpha_vantage.intraday_interval,
            alpha_vantage.extended_hours,
            _rules(config, watchlist),
        ),
        log=context.log.info,
    )
    outcome = run.over(list(context.partition_keys))
    if outcome.stats is not None:
        stats = outcome.stats
        context.log.info(
            f"Upserted {stats.rows} {alpha_vantage.intraday_interval} bars: {stats.inserted} new, "
            f"{stats.updated} revised, {stats.unchanged} unchanged"
        )
    done: dict[str, Collection[str]] = {
        RAW_INTRADAY: outcome.raw.keys(),
        CLEAN_INTRADAY: outcome.clean.keys(),
        INTRADAY: outcome.loaded.keys(),
    }
    for stage in (RAW_INTRADAY, CLEAN_INTRADAY, INTRADAY):
        if stage not in stages:
            continue
        for symbol in outcome.symbols:
            if symbol in done[stage]:
                yield AssetMaterialization(
                    asset_key=stage,
                    partition=symbol,
                    metadata=_intraday_metadata(stage, symbol, outcome),
                )
    if outcome.failures:
        raise _intraday_failure(outcome)
