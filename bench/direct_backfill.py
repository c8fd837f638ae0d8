"""The backfill's work without Dagster: ``python -m bench.direct_backfill`` (benchmark 6).

The same resources the code location builds from the environment, the same ``BatchRunner`` over
all three stages for ``MARKET_SYMBOLS``, in one plain process: what is left when the
orchestration is taken away. Exits 1 if any symbol failed.
"""

from __future__ import annotations

import sys

from market_core.assets import CLEAN, OHLCV, RAW
from market_pipeline.batch import BatchRunner, BatchSettings
from market_pipeline.definitions import build_resources
from market_pipeline.partitions import watchlist
from market_pipeline.resources.alpha_vantage import AlphaVantageResource
from market_pipeline.resources.storage import MarketDuckDB
from market_pipeline.settings import Settings
from market_pipeline.validation import Rules


def main() -> int:
    settings = Settings.from_env()
    resources = build_resources(settings)
    source, duckdb = resources["alpha_vantage"], resources["duckdb"]
    assert isinstance(source, AlphaVantageResource) and isinstance(duckdb, MarketDuckDB)
    runner = BatchRunner(
        home=settings.home,
        client=source.client(),
        duckdb=duckdb,
        stages=[RAW, CLEAN, OHLCV],
        settings=BatchSettings(outputsize=settings.outputsize, rules=Rules()),
        log=lambda _: None,
    )
    outcome = runner.run(watchlist(settings))
    if outcome.failures:
        print(f"{len(outcome.failures)} symbols failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
