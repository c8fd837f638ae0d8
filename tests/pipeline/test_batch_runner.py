"""The executor's typed outcome: load batches committed in order, a failed transaction failing
its own symbols and no others, and the metadata each typed result becomes."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
from dagster import AssetKey

from market_core.assets import ACTIONS, CLEAN, OHLCV, RAW, RAW_ACTIONS
from market_core.home import DataHome
from market_pipeline.bars.rules import CLEAN_SCHEMA, Rules
from market_pipeline.runs.batch import BatchRunner, BatchSettings
from market_pipeline.runs.outcome import ErrorKind, Loaded, StageFailed
from market_pipeline.store.duckdb_file import DuckDBFileStore
from market_pipeline.store.files import write_parquet_atomic
from tests.conftest import Run
from tests.pipeline.helpers import recent_bars, table_rows
from tests.stubs.alpha_vantage import AlphaVantageStub


def clean_bars(symbol: str, days: list[dt.date]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "symbol": [symbol] * len(days),
            "timestamp": [dt.datetime.combine(d, dt.time()) for d in days],
            "open": [10.0] * len(days),
            "high": [11.0] * len(days),
            "low": [9.0] * len(days),
            "close": [10.5] * len(days),
            "volume": [100] * len(days),
            "flags": [None] * len(days),
        },
        schema=CLEAN_SCHEMA,  # type: ignore[arg-type]
    )


def test_a_failed_transaction_fails_its_batch_alone_and_later_batches_still_load(
    tmp_path: Path,
) -> None:
    home = DataHome(tmp_path / "home")
    days = [dt.date(2024, 1, 2), dt.date(2024, 1, 3), dt.date(2024, 1, 4)]
    for symbol in ("A", "B", "C", "D", "E"):
        write_parquet_atomic(clean_bars(symbol, days), home.clean_file(symbol))
    # The same bar twice: the table's key refuses it, and the transaction of C's batch with it.
    write_parquet_atomic(clean_bars("C", [*days, days[0]]), home.clean_file("C"))
    lines: list[str] = []
    runner = BatchRunner(
        home=home,
        client=None,
        duckdb=DuckDBFileStore(database=str(home.duckdb_path)),
        stages=[OHLCV],
        settings=BatchSettings(outputsize="compact", rules=Rules(), load_batch_symbols=2),
        log=lines.append,
    )

    outcome = runner.run(["A", "B", "C", "D", "F", "E"])  # F has no clean file

    assert set(outcome.failures) == {"C", "D", "F"}
    for symbol in ("C", "D"):
        failure = outcome.failures[symbol]
        assert isinstance(failure, StageFailed) and failure.stage == OHLCV
        assert failure.kind is ErrorKind.LOAD
        assert failure.message.startswith(f"{symbol}: DuckDB upsert failed: ")
    missing = outcome.failures["F"]
    assert isinstance(missing, StageFailed) and missing.kind is ErrorKind.DATA
    assert "F: no clean data yet" in missing.message
    assert list(outcome.materialized) == [OHLCV]
    loaded = outcome.results(Loaded)
    assert list(loaded) == ["A", "B", "E"]
    assert loaded["A"] == Loaded(
        "A", 3, "2024-01-02", "2024-01-04", "ohlcv_data", str(home.duckdb_path), 6, 0
    )
    assert loaded["E"].batch_inserted == 3, "E's own transaction, after the failed one"
    assert {row[1] for row in table_rows(home)} == {"A", "B", "E"}
    assert "DuckDB upsert of 2 symbols failed and was rolled back" in "\n".join(lines)
    assert lines[-1].startswith("progress: 6/6 symbols done, 0 left, 3 failed")


def test_each_stage_reports_exactly_its_metadata(keyed: AlphaVantageStub, run: Run) -> None:
    keyed.set_bars("AAA", recent_bars(12))
    result = run(["AAA"])
    assert result.success
    keys = {
        e.asset_key: set(e.materialization.metadata)
        for e in result.get_asset_materialization_events()
    }
    span = {"rows", "first_date", "last_date"}
    assert keys == {
        AssetKey(RAW): span | {"outputsize", "source", "path"},
        AssetKey(CLEAN): span | {"rejected", "flagged", "outside_history_window", "path",
                                 "rejects_path", "preview"},
        AssetKey(OHLCV): span | {"table", "database", "batch_inserted", "batch_revised"},
        AssetKey(RAW_ACTIONS): {"splits", "dividends", "reason", "source", "splits_path",
                                "dividends_path"},
        AssetKey(ACTIONS): {"events", "splits", "dividends", "newest_ex_date", "rejected",
                            "vanished", "vanished_events", "rejects_path", "table", "database",
                            "batch_inserted", "batch_revised", "batch_deleted"},
    }  # fmt: skip
