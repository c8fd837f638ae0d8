"""What every path's assets share: one op per path run over a range of symbols, its config, and
one way to report its outcome (a materialization per symbol and stage, one ``Failure``)."""

from collections.abc import Callable, Iterator, Sequence
from typing import Any, assert_never

import polars as pl
from dagster import (
    AssetCheckSpec,
    AssetMaterialization,
    AssetsDefinition,
    AssetSpec,
    BackfillPolicy,
    Config,
    Failure,
    MetadataValue,
    multi_asset,
)
from pydantic import Field

from market_core.assets import RAW_INTRADAY
from market_pipeline.bars.rules import Rules
from market_pipeline.daily.fetch import RawResult
from market_pipeline.defs.partitions import WatchlistResource, symbols_partitions
from market_pipeline.intraday.stages import RawIntraday
from market_pipeline.runs.outcome import (
    ActionsFetched,
    ActionsLoaded,
    BatchOutcome,
    Cleaned,
    ErrorKind,
    IntradayCleaned,
    IntradayLoaded,
    Loaded,
    StageFailed,
    StageResult,
)

ALPHA_VANTAGE_POOL = "alpha_vantage"
"""The concurrency pool of every step that calls Alpha Vantage (``cli.instance`` sizes it)."""
INTRADAY_REFUSED = (
    "Alpha Vantage refused TIME_SERIES_INTRADAY for this key (a premium endpoint): intraday "
    "bars need a premium key. The refusal is remembered: the intraday sensor stops asking until "
    "the key changes or a run by hand succeeds. "
)


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


def rules_of(config: PipelineConfig, watchlist: WatchlistResource) -> Rules:
    return Rules(config.move_threshold, config.volume_ratio, watchlist.start_date())


def path_op(
    name: str, specs: Sequence[AssetSpec], check_specs: Sequence[AssetCheckSpec] = ()
) -> Callable[[Callable[..., Any]], AssetsDefinition]:
    """One op for a path's stages: a run over a range of symbols is one step in one process
    (each symbol fails alone), and each stage can still be selected on its own."""
    return multi_asset(
        name=name,
        specs=specs,
        check_specs=check_specs,
        can_subset=True,
        partitions_def=symbols_partitions,
        backfill_policy=BackfillPolicy.single_run(),
        pool=ALPHA_VANTAGE_POOL,
    )


def materializations(outcome: BatchOutcome) -> Iterator[AssetMaterialization]:
    """One per symbol and stage it reached, stage by stage in the order the data flows."""
    for stage, results in outcome.materialized.items():
        for symbol, result in results.items():
            yield AssetMaterialization(asset_key=stage, partition=symbol, metadata=metadata(result))


def metadata(result: StageResult) -> dict[str, Any]:
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
        case RawIntraday():
            return {"rows": result.rows, "first": result.first, "last": result.last,
                    "interval": result.interval, "outputsize": result.outputsize,
                    "source": result.source, "path": MetadataValue.path(result.path)}  # fmt: skip
        case IntradayCleaned():
            return {
                "rows": result.rows,
                "first": result.first,
                "last": result.last,
                "interval": result.interval,
                "rejected": result.rejected,
                "reject_counts": dict(result.reject_counts),
                "flagged": result.flagged,
                "path": MetadataValue.path(result.path),
                "rejects_path": MetadataValue.path(result.rejects_path),
            }
        case IntradayLoaded():
            return {"rows": result.rows, "table": result.table,
                    "batch_inserted": result.batch_inserted,
                    "batch_revised": result.batch_revised}  # fmt: skip
    assert_never(result)


def _span(result: RawResult | Cleaned | Loaded) -> dict[str, Any]:
    return {"rows": result.rows, "first_date": result.first_date, "last_date": result.last_date}


def _preview(bars: pl.DataFrame) -> str:
    """The newest bars as a Markdown table, for the Dagster UI."""
    bars = bars.with_columns(pl.col("timestamp").dt.date())
    lines = ["| " + " | ".join(bars.columns) + " |", "|" + "---|" * bars.width]
    lines += ["| " + " | ".join("" if v is None else str(v) for v in row) + " |"
              for row in bars.iter_rows()]  # fmt: skip
    return "\n".join(lines)


def failure(outcome: BatchOutcome) -> Failure:
    """One failure for the step, naming every failed symbol, so that a retry can take just them."""
    failed = sorted(outcome.failures)
    if any(
        isinstance(f, StageFailed) and f.kind is ErrorKind.REFUSED and f.stage == RAW_INTRADAY
        for f in outcome.failures.values()
    ):
        head = INTRADAY_REFUSED
    else:
        head = (
            f"{len(failed)} of {len(outcome.symbols)} symbols failed (the others are "
            f"materialized; re-run just these): "
        )
    return Failure(
        description=(head + "; ".join(outcome.failures[s].message for s in failed))[:4000],
        metadata={
            "failed_symbols": failed,
            "failed": len(failed),
            "succeeded": len(outcome.symbols) - len(failed),
            "actions_only_failed": [s for s in failed if outcome.failures[s].actions_only],
        },
    )
