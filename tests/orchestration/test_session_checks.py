"""The session checks on ohlcv_data, through real runs: the offline sample's rejected day is a
missing session, a weekend bar is not a session (and stays), bars before a listing are named."""

from __future__ import annotations

import datetime as dt

import duckdb
import polars as pl
from dagster import AssetCheckEvaluation, ExecuteInProcessResult

from market_core.home import DataHome
from market_core.schema import CREATE_LISTINGS_SQL
from market_pipeline.daily.completeness import (
    BEFORE_LISTING,
    MISSING_SESSIONS,
    NOT_A_SESSION,
    Finding,
    SessionReport,
)
from market_pipeline.defs.checks import SYMBOLS_SHOWN, session_result
from tests.conftest import Run
from tests.pipeline.helpers import failure_text, table_rows
from tests.stubs.alpha_vantage import AlphaVantageStub


def evaluations(result: ExecuteInProcessResult) -> dict[str, AssetCheckEvaluation]:
    assert result.success, failure_text(result)
    return {c.check_name: c for c in result.get_asset_check_evaluations()}


def test_the_sample_s_rejected_session_is_reported_missing(home: DataHome, run: Run) -> None:
    checks = evaluations(run(["AAPL"]))
    rejected = sorted(
        pl.read_parquet(home.rejects_file("AAPL"))["timestamp"].str.slice(0, 10).to_list()
    )
    assert "2024-11-04" in rejected

    missing = checks[MISSING_SESSIONS]
    assert not missing.passed and missing.severity.value == "WARN"
    assert missing.metadata["sessions"].value == len(rejected)
    assert missing.metadata["by_symbol"].value == {"AAPL": {"count": 3, "first": rejected}}
    assert "AAPL: " in (missing.description or "") and "2024-11-04" in (missing.description or "")
    assert missing.metadata["symbols_checked"].value == 1
    assert missing.metadata["symbols_with_listing"].value == 0, "no listings table yet"
    assert checks[NOT_A_SESSION].passed and checks[NOT_A_SESSION].metadata["bars"].value == 0
    assert checks[BEFORE_LISTING].passed


def test_a_weekend_bar_is_flagged_and_kept(
    keyed: AlphaVantageStub, home: DataHome, run: Run
) -> None:
    bar = {"1. open": "10", "2. high": "11", "3. low": "9", "4. close": "10.5", "5. volume": "100"}
    days = ["2024-11-01", "2024-11-02", "2024-11-04", "2024-11-05", "2024-11-06"]
    keyed.set_bars("AAA", [(day, bar) for day in days])  # 2024-11-02 is a Saturday

    checks = evaluations(run(["AAA"]))

    weekend = checks[NOT_A_SESSION]
    assert not weekend.passed
    assert weekend.metadata["by_symbol"].value == {"AAA": {"count": 1, "first": ["2024-11-02"]}}
    stored = [row[0].date().isoformat() for row in table_rows(home, "AAA")]
    assert stored == days, "flagged, never deleted"
    assert checks[MISSING_SESSIONS].passed, "a Saturday is no session to miss"


def test_bars_before_the_listing_s_ipo_date_are_named(home: DataHome, run: Run) -> None:
    assert run(["AAPL"]).success
    with duckdb.connect(str(home.duckdb_path)) as conn:
        conn.execute(CREATE_LISTINGS_SQL)
        conn.execute(
            "INSERT INTO listings VALUES ('AAPL', 'Apple Inc', 'NASDAQ', 'Stock', ?, NULL, "
            "'active', current_date, current_date)",
            [dt.date(2020, 1, 2)],
        )
        before = conn.execute(
            "SELECT strftime(min(timestamp), '%Y-%m-%d'), count(*) FROM ohlcv_data "
            "WHERE symbol = 'AAPL' AND timestamp < DATE '2020-01-02'"
        ).fetchone()
    assert before is not None and before[1] > 200, "the sample starts in 2019"

    checks = evaluations(run(["AAPL"]))  # the next load: an identical reload

    early = checks[BEFORE_LISTING]
    assert not early.passed
    assert early.metadata["bars"].value == before[1]
    assert early.metadata["symbols_with_listing"].value == 1
    found = early.metadata["by_symbol"].value["AAPL"]
    assert found["count"] == before[1] and found["first"][0] == before[0]
    assert len(found["first"]) == 5
    assert f"AAPL: {before[0]}, " in (early.description or "")
    assert (early.description or "").endswith(f" and {before[1] - 5} more")
    assert checks[MISSING_SESSIONS].metadata["sessions"].value == 3, "the listing changes no gap"


def test_the_checks_cover_the_run_s_symbols_not_the_whole_table(
    keyed: AlphaVantageStub, run: Run
) -> None:
    bar = {"1. open": "10", "2. high": "11", "3. low": "9", "4. close": "10.5", "5. volume": "100"}
    keyed.set_bars("AAA", [(day, bar) for day in ("2024-11-01", "2024-11-06", "2024-11-07")])
    keyed.set_bars("BBB", [(day, bar) for day in ("2024-11-06", "2024-11-07")])
    assert run(["AAA"]).success
    keyed.script("CCC", "error_message")

    result = run(["BBB", "CCC"])

    assert not result.success, "CCC failed"
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    missing = checks[MISSING_SESSIONS]
    assert missing.passed, "AAA's gap is not this run's"
    assert missing.metadata["symbols_checked"].value == 1, "BBB; CCC has no bars"
    assert missing.metadata["by_symbol"].value == {}

    again = {c.check_name: c for c in run(["AAA"]).get_asset_check_evaluations()}
    assert again[MISSING_SESSIONS].metadata["by_symbol"].value == {
        "AAA": {"count": 2, "first": ["2024-11-04", "2024-11-05"]}
    }
    assert again[MISSING_SESSIONS].metadata["symbols_checked"].value == 1


def test_a_result_names_the_most_affected_symbols_and_counts_them_all() -> None:
    day = dt.date(2024, 11, 4)
    found = {f"S{i:03d}": Finding(i + 1, (day,)) for i in range(SYMBOLS_SHOWN + 50)}
    report = SessionReport(400, 0, {MISSING_SESSIONS: found, NOT_A_SESSION: {}, BEFORE_LISTING: {}})

    result = session_result(MISSING_SESSIONS, report)

    shown = result.metadata["by_symbol"].value
    assert len(shown) == SYMBOLS_SHOWN and next(iter(shown)) == f"S{SYMBOLS_SHOWN + 49:03d}"
    assert result.metadata["symbols_affected"].value == SYMBOLS_SHOWN + 50
    assert result.metadata["sessions"].value == sum(f.count for f in found.values())
    assert session_result(NOT_A_SESSION, report).description == "none in 400 symbols"
