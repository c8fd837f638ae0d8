"""The corporate actions in the graph: materialized with the stub through Dagster, refreshed by
the policy (first load, weekly, an unexplained large move), after the bars and within the quota,
with their checks; and the offline sample through ``make ingest``'s program."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest
from dagster import (
    AssetKey,
    AssetPartitionStatus,
    DagsterInstance,
    ExecuteInProcessResult,
    evaluate_automation_conditions,
)

from market_core.assets import ACTIONS, OHLCV, RAW_ACTIONS
from market_core.home import DataHome
from market_pipeline.actions.fetch import last_actions_fetch
from market_pipeline.actions.known import known_ex_dates, move_days
from market_pipeline.cli.retry import failed_symbols
from market_pipeline.definitions import defs
from market_pipeline.defs.partitions import parse_symbols, symbols_partitions
from market_pipeline.defs.planned import PLANNED_SUBSET_VAR
from market_pipeline.source.sample import split_date
from tests.conftest import Run
from tests.pipeline.helpers import failure_text, materialized, recent_bars, table_rows
from tests.pipeline.test_ingest_cli import ingest
from tests.stubs.alpha_vantage import AlphaVantageStub

Bars = list[tuple[str, dict[str, str]]]
DIVIDEND = {
    "ex_dividend_date": "2024-05-09",
    "declaration_date": "None",
    "record_date": "2024-05-10",
    "payment_date": "2024-06-10",
    "amount": "0.25",
}
WATCHLIST = Path(__file__).resolve().parents[2] / "market_pipeline" / "watchlist.txt"


def actions(home: DataHome, symbol: str) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(home.duckdb_path), read_only=True) as conn:
        return conn.execute(
            "SELECT ex_date::VARCHAR, kind, split_factor, amount FROM corporate_actions "
            "WHERE symbol = ? ORDER BY ex_date, kind",
            [symbol],
        ).fetchall()


def calls(stub: AlphaVantageStub, symbol: str) -> tuple[int, int, int]:
    """Bars, SPLITS and DIVIDENDS calls so far for ``symbol``."""
    return (
        stub.count(symbol, "TIME_SERIES_DAILY"),
        stub.count(symbol, "SPLITS"),
        stub.count(symbol, "DIVIDENDS"),
    )


def metadata(result: ExecuteInProcessResult, asset: str, symbol: str) -> dict[str, Any]:
    [event] = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key == AssetKey(asset) and e.partition == symbol
    ]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def check(result: ExecuteInProcessResult, asset: str, name: str) -> Any:
    [found] = [
        c
        for c in result.get_asset_check_evaluations()
        if c.asset_key == AssetKey(asset) and c.check_name == name
    ]
    return found


def age_actions(home: DataHome, symbol: str, days: int) -> None:
    """Make the symbol's last actions fetch ``days`` older, as if it had been made back then."""
    before = last_actions_fetch(home, symbol)
    assert before is not None
    for folder in ("splits", "dividends"):
        path = home.raw_actions_file(symbol, folder)
        stamp = dt.datetime.fromisoformat(pl.read_parquet_metadata(path)["fetched_at"])
        frame = pl.read_parquet(path).with_columns(pl.col("fetched_at") - dt.timedelta(days=days))
        frame.write_parquet(
            path, metadata={"fetched_at": (stamp - dt.timedelta(days=days)).isoformat()}
        )
    assert last_actions_fetch(home, symbol) == before - dt.timedelta(days=days)


def with_drop(bars: Bars) -> Bars:
    """The newest bar at half the price before it: a 2:1 split as unadjusted prices show it."""
    day, values = bars[-1]
    halved = {k: f"{float(v) / 2:.4f}" if k != "5. volume" else v for k, v in values.items()}
    return [*bars[:-1], (day, halved)]


@pytest.fixture
def aaa(keyed: AlphaVantageStub) -> AlphaVantageStub:
    keyed.set_bars("AAA", recent_bars(30))
    keyed.set_actions("AAA", "SPLITS", [{"effective_date": "2020-08-31", "split_factor": "4.0000"}])
    keyed.set_actions("AAA", "DIVIDENDS", [DIVIDEND])
    return keyed


def test_a_first_load_fetches_the_actions_after_the_bars_and_stores_them(
    aaa: AlphaVantageStub, run: Run, home: DataHome
) -> None:
    result = run(["AAA"])

    assert result.success, failure_text(result)
    assert calls(aaa, "AAA") == (1, 1, 1)
    functions = [r.function for r in aaa.requests]
    assert functions == ["TIME_SERIES_DAILY", "SPLITS", "DIVIDENDS"], "the bars go first"
    assert actions(home, "AAA") == [
        ("2020-08-31", "split", 4.0, None),
        ("2024-05-09", "dividend", None, 0.25),
    ]
    assert materialized(result, RAW_ACTIONS) == materialized(result, ACTIONS) == {"AAA"}
    raw = metadata(result, RAW_ACTIONS, "AAA")
    assert raw["splits"] == 1 and raw["dividends"] == 1
    assert raw["reason"].startswith("first load")
    stored = metadata(result, ACTIONS, "AAA")
    assert (stored["events"], stored["splits"], stored["dividends"]) == (2, 1, 1)
    assert stored["newest_ex_date"] == "2024-05-09"
    assert stored["rejected"] == 0 and stored["vanished"] == 0
    assert check(result, ACTIONS, "reject_bad_split_factor").passed


def test_the_actions_are_fetched_again_only_after_a_week(
    aaa: AlphaVantageStub, run: Run, home: DataHome
) -> None:
    assert run(["AAA"]).success
    second = run(["AAA"])
    assert second.success
    assert calls(aaa, "AAA") == (2, 1, 1), "within a week: the bars only"
    assert materialized(second, OHLCV) == {"AAA"}
    assert materialized(second, RAW_ACTIONS) == materialized(second, ACTIONS) == set()

    age_actions(home, "AAA", 6)
    assert run(["AAA"]).success
    assert calls(aaa, "AAA") == (3, 1, 1), "six days: still not due"

    age_actions(home, "AAA", 2)  # fetched 8 days ago now
    aaa.set_actions("AAA", "SPLITS", [])  # the split vanished from the vendor's answer
    third = run(["AAA"])
    assert third.success, failure_text(third)
    assert calls(aaa, "AAA") == (4, 2, 2)
    assert metadata(third, RAW_ACTIONS, "AAA")["reason"].startswith("weekly refresh")
    stored = metadata(third, ACTIONS, "AAA")
    assert stored["vanished_events"] == ["2020-08-31 split"]
    assert actions(home, "AAA") == [("2024-05-09", "dividend", None, 0.25)]


def test_a_large_move_no_action_explains_refreshes_them_in_the_same_run(
    aaa: AlphaVantageStub, run: Run, home: DataHome
) -> None:
    bars = recent_bars(30)
    assert run(["AAA"]).success
    age_actions(home, "AAA", 4)  # fetched before the newest bar's day, less than a week ago
    split_day = bars[-1][0]
    aaa.set_bars("AAA", with_drop(bars))
    aaa.set_actions("AAA", "SPLITS", [{"effective_date": split_day, "split_factor": "2.0000"}])

    result = run(["AAA"])

    assert result.success, failure_text(result)
    assert calls(aaa, "AAA") == (2, 2, 2), "the move made them due at once"
    assert split_day in metadata(result, RAW_ACTIONS, "AAA")["reason"]
    assert (split_day, "split", 2.0, None) in actions(home, "AAA")
    assert not check(result, "clean_data", "flag_large_move").passed
    explained = check(result, "clean_data", "unexplained_large_move")
    assert explained.passed, "the refreshed answer explains the move"


def test_the_unexplained_move_check_names_the_day_and_asks_the_vendor_only_once(
    aaa: AlphaVantageStub, run: Run, home: DataHome
) -> None:
    bars = recent_bars(30)
    assert run(["AAA"]).success
    age_actions(home, "AAA", 4)
    aaa.set_bars("AAA", with_drop(bars))

    result = run(["AAA"])

    assert result.success, failure_text(result)
    assert calls(aaa, "AAA") == (2, 2, 2)
    found = check(result, "clean_data", "unexplained_large_move")
    assert not found.passed
    assert found.metadata["by_symbol"].value == {"AAA": [bars[-1][0]]}
    assert f"AAA: {bars[-1][0]}" in (found.description or "")

    again = run(["AAA"])
    assert again.success
    assert calls(aaa, "AAA") == (3, 2, 2), "fetched after the move: that answer stands"
    assert not check(again, "clean_data", "unexplained_large_move").passed


def test_a_spent_quota_during_the_actions_leaves_the_bars_and_fails_the_rest_by_name(
    keyed: AlphaVantageStub, run: Run, home: DataHome
) -> None:
    for symbol in ("AAA", "BBB", "CCC"):
        keyed.set_bars(symbol, recent_bars(20))
    keyed.script_actions("BBB", "SPLITS", "info_daily")

    result = run(["AAA", "BBB", "CCC"])

    assert not result.success
    assert materialized(result, OHLCV) == {"AAA", "BBB", "CCC"}, "the bars stay loaded"
    assert materialized(result, RAW_ACTIONS) == materialized(result, ACTIONS) == {"AAA"}
    assert keyed.count("CCC", "SPLITS") == 0
    text = failure_text(result)
    assert "CCC: corporate actions not attempted (they stay due for the next run" in text
    assert "BBB" in text
    assert {row[1] for row in table_rows(home)} == {"AAA", "BBB", "CCC"}

    retried = run(["AAA", "BBB", "CCC"])
    assert retried.success, failure_text(retried)
    assert materialized(retried, RAW_ACTIONS) == {"BBB", "CCC"}, "still due; AAA is not"


def test_the_bars_go_first_and_the_actions_take_only_the_calls_left(
    keyed: AlphaVantageStub, run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALPHAVANTAGE_REQUESTS_PER_DAY", "6")
    for symbol in ("AAA", "BBB", "CCC"):
        keyed.set_bars(symbol, recent_bars(20))

    result = run(["AAA", "BBB", "CCC"])

    assert result.success, failure_text(result)
    assert materialized(result, OHLCV) == {"AAA", "BBB", "CCC"}
    assert materialized(result, RAW_ACTIONS) == {"AAA"}, "3 calls left: one symbol's two"
    assert keyed.count() == 5


def test_the_offline_sample_loads_the_watchlists_actions_and_its_split_explains_its_drop(
    tmp_path: Path,
) -> None:
    home = DataHome(tmp_path / "offline")
    done = ingest({"MARKET_DATA_HOME": str(home.root)})
    assert done.returncode == 0, done.stdout + done.stderr

    watchlist = parse_symbols(WATCHLIST.read_text().splitlines())
    for symbol in watchlist:
        stored = actions(home, symbol)
        assert (split_date(symbol).isoformat(), "split", 4.0, None) in stored
        assert sum(1 for row in stored if row[1] == "dividend") >= 20
    clean = pl.read_parquet(home.clean_file("AAPL"))
    assert move_days(clean) == (split_date("AAPL"),), "the sample's drop is its split"
    assert split_date("AAPL") in known_ex_dates(home, ["AAPL"])["AAPL"]


@pytest.mark.filterwarnings("ignore::dagster.BetaWarning")
def test_raw_actions_asked_for_alone_are_fetched_and_corporate_actions_follow(
    aaa: AlphaVantageStub, run: Run, instance: DagsterInstance, home: DataHome
) -> None:
    location = defs()
    assert run(["AAA"]).success
    tick = evaluate_automation_conditions(defs=location, instance=instance)
    assert tick.total_requested == 0

    aaa.set_actions("AAA", "DIVIDENDS", [])
    asked = run(["AAA"], selection=[RAW_ACTIONS])  # as from the UI: not due, but asked for
    assert asked.success, failure_text(asked)
    assert calls(aaa, "AAA") == (1, 2, 2)
    assert metadata(asked, RAW_ACTIONS, "AAA")["reason"].startswith("asked for")
    tick = evaluate_automation_conditions(defs=location, instance=instance, cursor=tick.cursor)
    assert tick.get_requested_partitions(AssetKey(ACTIONS)) == {"AAA"}

    followed = run(["AAA"], selection=[ACTIONS])
    assert followed.success, failure_text(followed)
    assert actions(home, "AAA") == [("2020-08-31", "split", 4.0, None)], "the dividend vanished"


@pytest.mark.parametrize("subset", [False, True], ids=["per-partition plan", "one plan per asset"])
def test_retry_failed_ignores_actions_skipped_in_a_run_that_failed_for_another_symbol(
    keyed: AlphaVantageStub,
    run: Run,
    instance: DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    subset: bool,
) -> None:
    """Either way Dagster plans a run (``make`` exports one plan per asset, defs/planned.py)."""
    if subset:
        monkeypatch.setenv(PLANNED_SUBSET_VAR, "true")
    else:
        monkeypatch.delenv(PLANNED_SUBSET_VAR, raising=False)
    for symbol in ("AAA", "BBB"):
        keyed.set_bars(symbol, recent_bars(20))
    assert run(["AAA", "BBB"]).success
    keyed.script("BBB", "error_message")
    failed = run(["AAA", "BBB"])  # AAA's actions are not due: planned, skipped
    assert not failed.success
    assert materialized(failed, OHLCV) == {"AAA"}
    status = instance.get_status_by_partition(AssetKey(RAW_ACTIONS), ["AAA"], symbols_partitions)
    if not subset:  # planned alone, then not materialized: how Dagster sees a skip in a failed run
        assert status == {"AAA": AssetPartitionStatus.FAILED}
    else:  # the op plans only the failed symbol's stages: a skip is no failure
        assert status != {"AAA": AssetPartitionStatus.FAILED}
    assert failed_symbols(instance) == ["BBB"], "AAA loaded; its actions were not due"
