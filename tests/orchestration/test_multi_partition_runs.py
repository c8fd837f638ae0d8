"""Many symbols in one run, one process: every symbol loads, one failure holds back no other,
and only the failed ones are fetched again on retry."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import AssetPartitionStatus, DagsterEventType, DagsterInstance, ExecuteInProcessResult

from market_core.home import DataHome
from market_pipeline.cli.instance import open_instance
from market_pipeline.cli.retry import failed_symbols
from market_pipeline.definitions import defs
from market_pipeline.defs.daily import symbol_pipeline
from market_pipeline.defs.partitions import range_tags, symbols_partitions
from market_pipeline.defs.planned import PLANNED_SUBSET_VAR, one_planned_event_per_asset
from tests.conftest import ENV_VARS, Run
from tests.pipeline.helpers import failure_text, materialized, table_rows
from tests.stubs.alpha_vantage import AlphaVantageStub

REPO = Path(__file__).resolve().parents[2]
SYMBOLS = [f"S{i:02d}" for i in range(50)]


def steps(result: ExecuteInProcessResult) -> int:
    return sum(1 for e in result.all_events if e.event_type == DagsterEventType.STEP_START)


def messages(instance: DagsterInstance, result: ExecuteInProcessResult) -> list[str]:
    return [entry.user_message for entry in instance.all_logs(result.run_id)]


def test_fifty_symbols_load_in_one_step_with_progress_lines(
    keyed: AlphaVantageStub, run: Run, home: DataHome, instance: DagsterInstance
) -> None:
    result = run(SYMBOLS)
    assert result.success, failure_text(result)
    assert steps(result) == 1
    for asset in ("raw_data", "clean_data", "ohlcv_data"):
        assert materialized(result, asset) == set(SYMBOLS)
    assert {row[1] for row in table_rows(home)} == set(SYMBOLS)
    assert keyed.count(function="TIME_SERIES_DAILY") == 50
    assert keyed.count() == 150, "and both corporate-action answers of each first load"
    progress = [m for m in messages(instance, result) if m.startswith("progress: ")]
    done = [int(m.removeprefix("progress: ").split("/")[0]) for m in progress]
    assert len(done) >= 10 and done == sorted(set(done)), "regular lines, in order"
    assert progress[-1].startswith("progress: 50/50 symbols done, 0 left, 0 failed, ~")
    assert all(" left, " in m and "s to go" in m for m in progress)


def test_one_failing_symbol_leaves_the_other_49_loaded(
    keyed: AlphaVantageStub, run: Run, home: DataHome, instance: DagsterInstance
) -> None:
    keyed.script("S17", "error_message")
    result = run(SYMBOLS)
    assert not result.success
    assert "S17: Alpha Vantage refused the call" in failure_text(result)
    loaded = set(SYMBOLS) - {"S17"}
    assert materialized(result, "ohlcv_data") == loaded
    assert {row[1] for row in table_rows(home)} == loaded
    assert failed_symbols(instance) == ["S17"]


def planned_events(instance: DagsterInstance, run_id: str) -> list[str | None]:
    """The partition of each materialization-planned event of the run (None: the whole range)."""
    return [
        entry.dagster_event.event_specific_data.partition
        for entry in instance.all_logs(
            run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION_PLANNED
        )
        if entry.dagster_event is not None
    ]


def test_one_planned_event_per_asset_still_marks_just_the_failed_symbol(
    keyed: AlphaVantageStub, run: Run, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What ``make ingest`` does: the range planned with one event per asset, and the op plans
    the failed symbol's stages itself, so its run's failure marks only that symbol failed."""
    monkeypatch.delenv(PLANNED_SUBSET_VAR, raising=False)  # make exports it
    keyed.script("S17", "error_message")
    with one_planned_event_per_asset():
        result = run(SYMBOLS)
    assert PLANNED_SUBSET_VAR not in os.environ, "the variable is restored"
    assert not result.success
    planned = planned_events(instance, result.run_id)
    assert planned.count(None) == 5, "one event per asset for the whole range"
    assert sorted(p for p in planned if p is not None) == ["S17"] * 5, "and the failed one's"
    assert failed_symbols(instance) == ["S17"]
    for asset in symbol_pipeline.keys:
        status = instance.get_status_by_partition(asset, SYMBOLS, symbols_partitions) or {}
        assert status["S17"] == AssetPartitionStatus.FAILED, asset
        assert status["S16"] == AssetPartitionStatus.MATERIALIZED, asset


def command(module: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    return subprocess.run(
        [sys.executable, "-m", module],
        cwd=REPO, env={**base, **env}, capture_output=True, text=True, timeout=240,
    )  # fmt: skip


def test_retry_fetches_only_the_failed_symbols(stub: AlphaVantageStub, home: DataHome) -> None:
    env = {
        "ALPHAVANTAGE_API_KEY": "x", "ALPHAVANTAGE_BASE_URL": stub.url,
        "ALPHAVANTAGE_REQUESTS_PER_SECOND": "0", "ALPHAVANTAGE_REQUESTS_PER_MINUTE": "0",
        "MARKET_DATA_HOME": str(home.root), "MARKET_SYMBOLS": "A,B,C,D,E,F",
    }  # fmt: skip
    stub.script("B", "error_message")
    stub.script("E", "error_message")
    assert command("market_pipeline.cli.ingest", env).returncode == 1
    assert {row[1] for row in table_rows(home)} == {"A", "C", "D", "F"}

    del env["MARKET_SYMBOLS"]  # the watchlist (now the bundled file) is not what a retry loads
    done = command("market_pipeline.cli.retry", env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "retry: 2 failed symbols: B, E" in done.stdout
    assert {row[1] for row in table_rows(home)} == {"A", "B", "C", "D", "E", "F"}
    bars = {s: stub.count(s, "TIME_SERIES_DAILY") for s in "ABCDEF"}
    assert bars == {"A": 1, "B": 2, "C": 1, "D": 1, "E": 2, "F": 1}
    assert {s: stub.count(s, "SPLITS") for s in "ABCDEF"} == dict.fromkeys("ABCDEF", 1)
    assert stub.count() == 8 + 12, "no watchlist symbol was fetched"

    with open_instance() as instance:  # the data home's own instance, as the commands used it
        assert failed_symbols(instance) == []


def test_retry_finds_the_symbols_of_a_run_that_died_before_it_could_mark_them(
    instance: DagsterInstance, keyed: AlphaVantageStub, run: Run
) -> None:
    """A run planned as one range whose process died (run monitoring marks it failed): the
    symbols it planned and never materialized are failed for ``make retry-failed``."""
    assert run(SYMBOLS[:3]).success
    instance.add_dynamic_partitions("symbols", SYMBOLS)
    job = defs().resolve_job_def("ingest_job")
    with one_planned_event_per_asset():
        died = instance.create_run_for_job(job, tags=range_tags(SYMBOLS[1:5]))
    instance.report_run_failed(died, "the process died")
    assert failed_symbols(instance) == SYMBOLS[1:5]
    assert run(SYMBOLS[1:3]).success
    assert failed_symbols(instance) == SYMBOLS[3:5], "loaded since: no longer failed"
