"""The freshness of ``ohlcv_data``, per symbol: a check that fails, naming the symbols behind
the last NYSE session (``daily.freshness``), and the schedule that evaluates it each evening
after the daily update. Why a custom check and not Dagster's freshness checks: docs/metrics.md
("Freshness")."""

import datetime as dt

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetSelection,
    MetadataValue,
    ScheduleDefinition,
    asset_check,
    define_asset_job,
)

from market_core.assets import OHLCV
from market_core.exchange import EXCHANGE_TZ
from market_pipeline.daily.completeness import ReportUnavailable
from market_pipeline.daily.freshness import GRACE, due_session, newest_bars, staleness
from market_pipeline.defs.partitions import PARTITIONS
from market_pipeline.defs.resources import MarketDuckDB

FRESHNESS_CHECK = "fresh_to_last_session"
FRESHNESS_JOB = "freshness_job"
SYMBOLS_SHOWN = 100


@asset_check(
    asset=OHLCV,
    name=FRESHNESS_CHECK,
    description=(
        "Every registered symbol has a bar of the last NYSE session that closed at least "
        f"{GRACE.total_seconds() / 3600:.0f} hours ago (16:00 New York + the vendor's time to "
        "publish). Fails naming the symbols behind and their newest bar."
    ),
)
def ohlcv_freshness(context: AssetCheckExecutionContext, duckdb: MarketDuckDB) -> AssetCheckResult:
    due = due_session(dt.datetime.now(dt.UTC))
    symbols = context.instance.get_dynamic_partitions(PARTITIONS)
    try:
        found = staleness(symbols, newest_bars(duckdb.store()), due)
    except ReportUnavailable as exc:
        return AssetCheckResult(
            passed=False,
            severity=AssetCheckSeverity.WARN,
            description=f"not evaluated: {exc}",
            metadata={"due_session": MetadataValue.text(due.isoformat())},
        )
    shown = list(found.stale.items())[:SYMBOLS_SHOWN]
    return AssetCheckResult(
        passed=not found.stale,
        severity=AssetCheckSeverity.ERROR,
        description=(
            f"{len(found.stale)} of {len(found.stale) + found.fresh} symbols have no bar of "
            f"{due.isoformat()}"
        ),
        metadata={
            "due_session": MetadataValue.text(due.isoformat()),
            "stale": len(found.stale),
            "fresh": found.fresh,
            "stale_symbols": MetadataValue.json(
                {symbol: None if last is None else last.isoformat() for symbol, last in shown}
            ),
        },
    )


freshness_job = define_asset_job(
    FRESHNESS_JOB,
    selection=AssetSelection.checks(ohlcv_freshness),
    description="Evaluates the freshness of ohlcv_data per symbol.",
)

freshness_schedule = ScheduleDefinition(
    name="freshness_check",
    job=freshness_job,
    cron_schedule="0 21 * * *",
    execution_timezone=str(EXCHANGE_TZ),
    description="21:00 New York: after the daily update (18:30) and the grace (until 20:00).",
)
