"""The intraday path against the Alpha Vantage stub over HTTP: wire formats, the session rule,
revisions, the premium refusal, the offline sample, and a daily graph untouched when it is off."""

from __future__ import annotations

import datetime as dt
from typing import Any

import duckdb
import polars as pl
import pytest
from dagster import AssetKey, DagsterInstance, ExecuteInProcessResult, build_resources, materialize

from market_core.assets import CLEAN_INTRADAY, RAW_INTRADAY
from market_core.assets import INTRADAY as INTRADAY_DATA
from market_core.home import DataHome
from market_core.sessions import session
from market_pipeline.definitions import defs
from market_pipeline.defs.intraday import intraday_pipeline
from market_pipeline.defs.outcomes import INTRADAY_REFUSED, failure
from market_pipeline.defs.resources import resources_from_env
from market_pipeline.intraday.stages import raw_intraday_frame, validate_intraday
from market_pipeline.runs.intraday import IntradayRunner, IntradaySettings
from market_pipeline.runs.outcome import ErrorKind, NotAttempted, StageFailed
from market_pipeline.source.client import AlphaVantageClient, key_facts
from market_pipeline.source.errors import PremiumOnlyError
from market_pipeline.store.duckdb_file import DuckDBFileStore
from tests.conftest import TEST_KEY, Run
from tests.pipeline.helpers import failure_text, materialized, resolution_problem, table_rows
from tests.stubs.alpha_vantage import AlphaVantageStub

INTRADAY = "TIME_SERIES_INTRADAY"
Bars = list[tuple[str, dict[str, Any]]]


@pytest.fixture
def five_min(keyed: AlphaVantageStub, monkeypatch: pytest.MonkeyPatch) -> AlphaVantageStub:
    monkeypatch.setenv("ALPHAVANTAGE_INTRADAY_INTERVAL", "5min")
    return keyed


def values(price: float, volume: int = 10_000) -> dict[str, str]:
    return {"1. open": f"{price:.4f}", "2. high": f"{price + 1:.4f}",
            "3. low": f"{price - 1:.4f}", "4. close": f"{price + 0.5:.4f}",
            "5. volume": str(volume)}  # fmt: skip


def bars(*stamps: str, price: float = 100.0) -> Bars:
    """Valid bars at the given timestamps, oldest first."""
    return [(stamp, values(price + i * 0.1)) for i, stamp in enumerate(stamps)]


FRIDAY = [f"2024-11-08 15:{m:02d}:00" for m in (40, 45, 50, 55)]


def run_intraday(
    instance: DagsterInstance, symbols: list[str], **overrides: object
) -> ExecuteInProcessResult:
    instance.add_dynamic_partitions("symbols", symbols)
    tags = (
        {"dagster/asset_partition_range_start": symbols[0],
         "dagster/asset_partition_range_end": symbols[-1]}
        if len(symbols) > 1 else {}
    )  # fmt: skip
    return materialize(
        [intraday_pipeline],
        instance=instance,
        resources=resources_from_env(backoff_seconds=0.01, timeout_seconds=1.0, **overrides),
        partition_key=symbols[0] if len(symbols) == 1 else None,
        tags=tags,
        raise_on_error=False,
    )


def intraday_rows(home: DataHome, symbol: str | None = None) -> list[tuple[Any, ...]]:
    if not home.duckdb_path.exists():
        return []
    with duckdb.connect(str(home.duckdb_path), read_only=True) as conn:
        if not conn.execute("SELECT 1 FROM duckdb_tables() WHERE table_name = ?",
                            ["ohlcv_intraday"]).fetchall():  # fmt: skip
            return []
        where, params = ("WHERE symbol = ?", [symbol]) if symbol else ("", [])
        return conn.execute(
            f"SELECT timestamp, symbol, interval, open, high, low, close, volume "
            f"FROM ohlcv_intraday {where} ORDER BY symbol, interval, timestamp",
            params,
        ).fetchall()


def load_stats(result: ExecuteInProcessResult, symbol: str) -> tuple[int, int]:
    for event in result.get_asset_materialization_events():
        if event.asset_key == AssetKey("intraday_data") and event.partition == symbol:
            meta = event.materialization.metadata
            return int(meta["batch_inserted"].value), int(meta["batch_revised"].value)  # type: ignore[arg-type]
    raise AssertionError(f"no intraday_data materialization for {symbol}")


def test_the_json_wire_format_is_fetched_as_asked_and_loaded(
    five_min: AlphaVantageStub, instance: DagsterInstance, home: DataHome
) -> None:
    five_min.set_intraday("AAPL", "5min", bars(*FRIDAY))
    result = run_intraday(instance, ["AAPL"])
    assert result.success, failure_text(result)
    [request] = [r for r in five_min.requests if r.function == INTRADAY]
    assert (request.symbol, request.interval, request.extended_hours) == ("AAPL", "5min", "false")
    assert request.outputsize == "full", "a first fetch asks for everything"
    rows = intraday_rows(home)
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (dt.datetime.fromisoformat(s), "AAPL", "5min") for s in FRIDAY
    ]
    assert rows[0][3:] == (100.0, 101.0, 99.0, 100.5, 10_000)
    assert materialized(result, "raw_intraday") == {"AAPL"}
    raw = pl.read_parquet(home.raw_intraday_file("AAPL", "5min"))
    assert raw.get_column("timestamp").to_list() == list(reversed(FRIDAY)), "kept as received"
    assert set(raw.get_column("time_zone")) == {"US/Eastern"}

    again = run_intraday(instance, ["AAPL"])
    assert again.success
    second = [r for r in five_min.requests if r.function == INTRADAY][-1]
    assert second.outputsize == "full", "the stored bars are too old for 100 compact bars"


def test_the_csv_wire_format_reads_as_the_json_one_and_loads(
    keyed: AlphaVantageStub, home: DataHome
) -> None:
    keyed.set_intraday("MSFT", "15min", bars("2024-11-08 09:30:00", "2024-11-08 09:45:00"))
    client = AlphaVantageClient(
        home=home, api_key=TEST_KEY, base_url=keyed.url, requests_per_second=0,
        requests_per_minute=0, requests_per_day=0, max_attempts=1,
    )  # fmt: skip
    try:
        ask: dict[str, Any] = {"extended_hours": False, "outputsize": "compact"}
        as_csv = client.fetch_intraday("MSFT", "15min", datatype="csv", **ask)
        as_json = client.fetch_intraday("MSFT", "15min", **ask)
    finally:
        client.close()
    assert [r.datatype for r in keyed.requests] == ["csv", ""]
    columns = ["timestamp", "open", "high", "low", "close", "volume"]
    csv_frame = raw_intraday_frame(as_csv).select(columns)
    assert csv_frame.equals(raw_intraday_frame(as_json).select(columns))
    assert csv_frame.get_column("timestamp").to_list() == [
        "2024-11-08 09:45:00", "2024-11-08 09:30:00"
    ]  # fmt: skip
    clean = validate_intraday(raw_intraday_frame(as_csv), "MSFT", "15min", extended=False).clean
    stats = DuckDBFileStore(database=str(home.duckdb_path)).load_intraday([clean])
    assert (stats.inserted, stats.updated) == (2, 0)
    assert [r[0].time() for r in intraday_rows(home)] == [dt.time(9, 30), dt.time(9, 45)]


def test_a_revised_bar_replaces_and_an_identical_reload_changes_nothing(
    five_min: AlphaVantageStub, instance: DagsterInstance, home: DataHome
) -> None:
    five_min.set_intraday("AAPL", "5min", bars(*FRIDAY))
    assert run_intraday(instance, ["AAPL"]).success
    before = intraday_rows(home)
    version = home.version_path.read_bytes()

    same = run_intraday(instance, ["AAPL"])
    assert same.success and load_stats(same, "AAPL") == (0, 0)
    assert intraday_rows(home) == before
    assert home.version_path.read_bytes() == version, "no change, no new data version"

    revised = bars(*FRIDAY)
    revised[-1] = (FRIDAY[-1], {**values(100.3), "4. close": "100.9000", "5. volume": "12345"})
    five_min.set_intraday("AAPL", "5min", revised)
    changed = run_intraday(instance, ["AAPL"])
    assert changed.success and load_stats(changed, "AAPL") == (0, 1)
    after = intraday_rows(home)
    assert after[:-1] == before[:-1] and len(after) == len(before)
    assert after[-1][6:] == (100.9, 12345)
    with duckdb.connect(str(home.duckdb_path), read_only=True) as conn:
        logged = conn.execute(
            "SELECT commit_id, timestamp, revised FROM bar_changes WHERE interval = '5min' "
            "ORDER BY commit_id, timestamp"
        ).fetchall()
    assert [(t, r) for _, t, r in logged] == [
        *((dt.datetime.fromisoformat(s), False) for s in FRIDAY),
        (dt.datetime.fromisoformat(FRIDAY[-1]), True),
    ], "the change log has the first load and the revision, nothing for the identical reload"


def test_bars_outside_their_session_are_rejected_and_the_good_ones_load(
    five_min: AlphaVantageStub, instance: DagsterInstance, home: DataHome
) -> None:
    good = ["2024-11-08 09:30:00", "2024-11-08 15:55:00", "2024-11-29 12:55:00"]
    outside = {
        "2024-11-08 09:25:00": "outside_session",  # before the open
        "2024-11-08 16:00:00": "outside_session",  # at the close
        "2024-11-08 17:30:00": "outside_session",  # post-market, not asked for
        "2024-11-29 13:00:00": "outside_session",  # after an early close
        "2024-11-28 10:00:00": "not_trading_day",  # Thanksgiving
        "2024-11-09 10:00:00": "not_trading_day",  # a Saturday
        "2024-11-08T10:00": "bad_timestamp",
    }
    answer = bars(*good) + [(stamp, values(100.0)) for stamp in outside]
    answer.append(("2024-11-08 10:05:00", {**values(100.0), "2. high": "90.0000"}))
    five_min.set_intraday("AAPL", "5min", answer)
    result = run_intraday(instance, ["AAPL"])
    assert result.success, failure_text(result)
    assert [r[0] for r in intraday_rows(home)] == [dt.datetime.fromisoformat(s) for s in good]
    rejects = pl.read_parquet(home.intraday_rejects_file("AAPL", "5min"))
    assert home.intraday_rejects_file("AAPL", "5min").is_relative_to(home.rejects_dir)
    found = dict(zip(rejects.get_column("timestamp"), rejects.get_column("reason"), strict=True))
    assert found == {**outside, "2024-11-08 10:05:00": "high_inconsistent"}


def test_extended_hours_admit_0400_to_2000(
    five_min: AlphaVantageStub,
    instance: DagsterInstance,
    home: DataHome,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ALPHAVANTAGE_INTRADAY_EXTENDED", "TRUE")
    inside = ["2024-11-08 04:00:00", "2024-11-08 09:25:00", "2024-11-08 19:55:00"]
    outside = ["2024-11-08 03:55:00", "2024-11-08 20:00:00", "2024-11-29 17:00:00"]
    five_min.set_intraday("AAPL", "5min", bars(*inside, *outside))
    result = run_intraday(instance, ["AAPL"])
    assert result.success, failure_text(result)
    [request] = [r for r in five_min.requests if r.function == INTRADAY]
    assert request.extended_hours == "true"
    assert [r[0] for r in intraday_rows(home)] == [dt.datetime.fromisoformat(s) for s in inside]
    rejects = pl.read_parquet(home.intraday_rejects_file("AAPL", "5min"))
    assert sorted(rejects.get_column("timestamp")) == outside


def test_a_premium_refusal_fails_the_run_once_with_the_reason_and_is_remembered(
    home: DataHome, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    with AlphaVantageStub(premium_intraday=False) as free:
        monkeypatch.setenv("ALPHAVANTAGE_API_KEY", TEST_KEY)
        monkeypatch.setenv("ALPHAVANTAGE_BASE_URL", free.url)
        monkeypatch.setenv("ALPHAVANTAGE_INTRADAY_INTERVAL", "1min")
        result = run_intraday(instance, ["AAPL", "MSFT"])
        assert free.count(function=INTRADAY) == 1, "the second symbol is not asked the same"
    assert not result.success
    text = failure_text(result)
    assert "refused TIME_SERIES_INTRADAY" in text and "This is a premium endpoint" in text
    assert "MSFT: not fetched" in text
    assert not intraday_rows(home) and not home.raw_intraday_file("AAPL", "1min").exists()
    facts = key_facts(home, TEST_KEY)
    refusal = facts.intraday_refused()
    assert refusal is not None and "premium endpoint" in refusal.message
    assert TEST_KEY not in facts.path.read_text() and TEST_KEY not in facts.path.name


def test_a_success_clears_a_remembered_refusal_and_keeps_the_other_facts(
    five_min: AlphaVantageStub, instance: DagsterInstance, home: DataHome
) -> None:
    facts = key_facts(home, TEST_KEY)
    facts.mark_full_refused()
    facts.mark_intraday_refused("AAPL: this is a premium endpoint")
    five_min.set_intraday("AAPL", "5min", bars(*FRIDAY))
    assert run_intraday(instance, ["AAPL"]).success
    assert facts.intraday_refused() is None and facts.full_refused()


def test_the_client_raises_the_refusal_as_premium_only(home: DataHome) -> None:
    with AlphaVantageStub(premium_intraday=False) as free:
        client = AlphaVantageClient(
            home=home, api_key=TEST_KEY, base_url=free.url, requests_per_second=0,
            requests_per_minute=0, requests_per_day=0, max_attempts=3,
        )  # fmt: skip
        try:
            with pytest.raises(PremiumOnlyError, match="not in the key's plan") as refused:
                client.fetch_intraday("IBM", "5min", extended_hours=False, outputsize="compact")
        finally:
            client.close()
        assert free.count(function=INTRADAY) == 1, "a refusal is not retried"
    assert not refused.value.outputsize_full


def test_with_the_interval_off_nothing_intraday_is_fetched_and_the_daily_graph_is_as_before(
    keyed: AlphaVantageStub, run: Run, instance: DagsterInstance, home: DataHome
) -> None:
    daily = run(["AAPL"])
    assert daily.success, failure_text(daily)
    assert table_rows(home, "AAPL")
    assert keyed.count(function=INTRADAY) == 0
    by_hand = run_intraday(instance, ["AAPL"])
    assert not by_hand.success and "ALPHAVANTAGE_INTRADAY_INTERVAL is off" in failure_text(by_hand)
    assert keyed.count(function=INTRADAY) == 0 and not intraday_rows(home)
    ingest = defs().resolve_job_def("ingest_job")
    assert {k.to_user_string() for k in ingest.asset_layer.executable_asset_keys} == {
        "raw_data", "clean_data", "ohlcv_data", "raw_actions", "corporate_actions"
    }  # fmt: skip


def test_the_offline_sample_answers_intraday_inside_the_sessions(
    home: DataHome, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALPHAVANTAGE_INTRADAY_INTERVAL", "5min")
    result = run_intraday(instance, ["AAPL", "MSFT"])
    assert result.success, failure_text(result)
    rows = intraday_rows(home)
    assert {r[1] for r in rows} == {"AAPL", "MSFT"} and {r[2] for r in rows} == {"5min"}
    for stamp in {r[0] for r in rows}:
        found = session(stamp.date())
        assert found is not None and found.admits(stamp), stamp
        assert stamp.minute % 5 == 0
    assert not pl.read_parquet(home.intraday_rejects_file("AAPL", "5min")).height
    again = run_intraday(instance, ["AAPL"])
    assert again.success and load_stats(again, "AAPL")[1] == 0, "the sample repeats its bars"


def test_a_load_that_fails_stores_nothing(home: DataHome) -> None:
    store = DuckDBFileStore(database=str(home.duckdb_path))
    frame = pl.DataFrame(
        {"timestamp": [dt.datetime(2024, 11, 8, 9, 30)] * 2, "symbol": ["AAPL", "MSFT"],
         "interval": ["5min"] * 2, "open": [1.0] * 2, "high": [1.0] * 2, "low": [1.0] * 2,
         "close": [1.0] * 2, "volume": [1, 1]}
    )  # fmt: skip
    assert store.load_intraday([frame]).inserted == 2
    twice = pl.concat([frame.with_columns(pl.lit(2.0).alias("close")), frame.head(1)])
    with pytest.raises(ValueError, match="given twice"):
        store.load_intraday([twice])
    assert [r[6] for r in intraday_rows(home)] == [1.0, 1.0]


def test_the_runner_types_a_refusal_and_the_symbols_it_stopped_as_the_daily_runner_does(
    home: DataHome,
) -> None:
    with AlphaVantageStub(premium_intraday=False) as free:
        client = AlphaVantageClient(
            home=home, api_key=TEST_KEY, base_url=free.url, requests_per_second=0,
            requests_per_minute=0, requests_per_day=0, max_attempts=3,
        )  # fmt: skip
        runner = IntradayRunner(
            home=home, client=client, store=None, stages=[CLEAN_INTRADAY, RAW_INTRADAY],
            settings=IntradaySettings("5min", extended=False),
        )  # fmt: skip
        try:
            outcome = runner.run(["AAPL", "MSFT"])
        finally:
            client.close()
    assert outcome.materialized == {RAW_INTRADAY: {}, CLEAN_INTRADAY: {}}, "in the data's order"
    refused, stopped = outcome.failures["AAPL"], outcome.failures["MSFT"]
    assert isinstance(refused, StageFailed)
    assert (refused.stage, refused.kind) == (RAW_INTRADAY, ErrorKind.REFUSED)
    assert isinstance(stopped, NotAttempted) and stopped.stage == RAW_INTRADAY
    assert not stopped.actions_only
    reported = failure(outcome)
    assert (reported.description or "").startswith(INTRADAY_REFUSED)
    assert "MSFT: not fetched: " in (reported.description or "")
    assert reported.metadata["failed_symbols"].value == ["AAPL", "MSFT"]


def test_a_load_without_clean_files_fails_each_symbol_on_its_data(home: DataHome) -> None:
    runner = IntradayRunner(
        home=home, client=None, store=DuckDBFileStore(database=str(home.duckdb_path)),
        stages=[INTRADAY_DATA], settings=IntradaySettings("5min", extended=False),
    )  # fmt: skip
    outcome = runner.run(["AAPL", "MSFT"])
    assert outcome.materialized == {INTRADAY_DATA: {}}
    for symbol, failed in outcome.failures.items():
        assert isinstance(failed, StageFailed) and failed.kind is ErrorKind.DATA
        assert failed.message == f"{symbol}: no clean intraday data yet; materialize clean_intraday"
    reported = failure(outcome)
    assert (reported.description or "").startswith("2 of 2 symbols failed")
    assert reported.metadata["succeeded"].value == 0


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("ALPHAVANTAGE_INTRADAY_INTERVAL", "2min", "must be off, 1min, 5min"),
        ("ALPHAVANTAGE_INTRADAY_EXTENDED", "maybe", "must be true or false, got 'maybe'"),
    ],
)
def test_a_bad_intraday_setting_fails_naming_its_variable(
    home: DataHome, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, says: str
) -> None:
    problem = resolution_problem(monkeypatch, variable, value)
    assert variable in problem and says in problem


def test_the_settings_default_to_off_and_read_their_variables(
    home: DataHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    with build_resources(resources_from_env()) as resolved:
        assert not resolved.alpha_vantage.intraday_on
        assert not resolved.alpha_vantage.extended_hours
    monkeypatch.setenv("ALPHAVANTAGE_INTRADAY_INTERVAL", " 15MIN ")
    monkeypatch.setenv("ALPHAVANTAGE_INTRADAY_EXTENDED", "true")
    with build_resources(resources_from_env()) as resolved:
        assert resolved.alpha_vantage.intraday_interval == "15min"
        assert resolved.alpha_vantage.extended_hours
