"""SPLITS and DIVIDENDS through the real client against the live stub, and the offline sample.

Each answer shape gets the handling its twin gets for the bars: retried, failing the symbol at
once, or stopping the run; a bad answer leaves the symbol's last good files byte for byte; the
key is nowhere afterwards.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from market_core.home import DataHome
from market_pipeline.actions.fetch import fetch_raw_actions, last_actions_fetch
from market_pipeline.source.client import AlphaVantageClient
from market_pipeline.source.errors import (
    AlphaVantageError,
    DailyQuotaError,
    InvalidApiKeyError,
    MalformedResponseError,
    RetryableError,
    TransientHTTPError,
    classify_actions,
)
from market_pipeline.source.sample import daily_bars, split_date
from tests.conftest import TEST_KEY
from tests.pipeline.helpers import snapshot
from tests.reliability.leaks import places_with_secret, texts_with_secret
from tests.stubs.alpha_vantage import AlphaVantageStub

FUNCTIONS = ("SPLITS", "DIVIDENDS")
SPLITS = [
    {"effective_date": "2020-08-31", "split_factor": "4.0000"},
    {"effective_date": "2014-06-09", "split_factor": "7.0000"},
]
DIVIDENDS = [
    {"ex_dividend_date": "2024-05-10", "declaration_date": "2024-05-02",
     "record_date": "2024-05-13", "payment_date": "2024-05-16", "amount": "0.25"},
    {"ex_dividend_date": "1995-11-21", "declaration_date": "None", "record_date": "None",
     "payment_date": "None", "amount": "0.03"},
]  # fmt: skip
RETRIED = ["note_frequency", "info_burst", "http_429", "http_500", "http_503", "reset",
           "timeout", "cut_body"]  # fmt: skip
FAILED_NO_RETRY = {
    "error_message": "refused the call",
    "truncated": "truncated or invalid JSON",
    "html": "an HTML page",
    "empty_object": "an empty object {}",
    "wrong_symbol": "events for 'ZZZZ'",
    "info_premium_endpoint": "not in the key's plan",
}
STOPPING = {
    "invalid_key": "rejected the API key",
    "info_demo": "demo key",
    "info_daily": "daily quota used up",
}

STOP_ERRORS = (InvalidApiKeyError, DailyQuotaError)
"""The errors the batch stops a run on (``market_pipeline.runs.batch.STOP_ERRORS``)."""

MakeClient = Callable[..., AlphaVantageClient]


@pytest.fixture
def make_client(home: DataHome, stub: AlphaVantageStub) -> Iterator[MakeClient]:
    clients: list[AlphaVantageClient] = []

    def make(**overrides: Any) -> AlphaVantageClient:
        settings: dict[str, Any] = {
            "api_key": TEST_KEY, "base_url": stub.url, "requests_per_second": 0,
            "requests_per_minute": 0, "requests_per_day": 0, "timeout_seconds": 1.0,
            "max_attempts": 3, "backoff_seconds": 0.01,
        }  # fmt: skip
        clients.append(AlphaVantageClient(home=home, **{**settings, **overrides}))
        return clients[-1]

    yield make
    for client in clients:
        client.close()


def files(home: DataHome, symbol: str) -> list[Path]:
    return [home.raw_actions_file(symbol, name) for name in ("splits", "dividends")]


def test_both_answers_are_kept_as_received(
    stub: AlphaVantageStub, make_client: MakeClient, home: DataHome
) -> None:
    stub.set_actions("AAA", "SPLITS", SPLITS)
    stub.set_actions("AAA", "DIVIDENDS", DIVIDENDS)
    before = dt.datetime.now(dt.UTC)
    result = fetch_raw_actions(make_client(), home, "AAA")
    after = dt.datetime.now(dt.UTC)

    assert (result.splits, result.dividends) == (2, 2)
    assert result.paths == tuple(str(p) for p in files(home, "AAA"))
    assert [(r.function, r.symbol, r.apikey, r.outputsize) for r in stub.requests] == [
        ("SPLITS", "AAA", TEST_KEY, ""),
        ("DIVIDENDS", "AAA", TEST_KEY, ""),
    ], "one call per function, no outputsize"
    splits, dividends = (pl.read_parquet(p) for p in files(home, "AAA"))
    assert splits.select("effective_date", "split_factor").to_dicts() == SPLITS
    assert dividends.select(*DIVIDENDS[0]).to_dicts() == DIVIDENDS, "strings, order and None kept"
    for frame, function in ((splits, "SPLITS"), (dividends, "DIVIDENDS")):
        assert frame["symbol"].to_list() == ["AAA", "AAA"]
        assert frame["source"].unique().to_list() == [f"{stub.url}?function={function}&symbol=AAA"]
        assert all(before <= t <= after for t in frame["fetched_at"])
    assert TEST_KEY not in result.source and "function=SPLITS" in result.source
    fetched = last_actions_fetch(home, "AAA")
    assert fetched is not None and before <= fetched <= after


def test_a_symbol_without_events_is_written_with_no_rows(
    stub: AlphaVantageStub, make_client: MakeClient, home: DataHome
) -> None:
    assert last_actions_fetch(home, "AAA") is None, "never fetched"
    stub.script_actions("AAA", "SPLITS", "empty_data")
    stub.script_actions("AAA", "DIVIDENDS", "empty_data")
    before = dt.datetime.now(dt.UTC)
    result = fetch_raw_actions(make_client(), home, "AAA")

    assert (result.splits, result.dividends) == (0, 0)
    splits, dividends = (pl.read_parquet(p) for p in files(home, "AAA"))
    assert splits.height == dividends.height == 0
    assert {"effective_date", "split_factor", "symbol", "source", "fetched_at"} <= set(
        splits.columns
    )
    assert {"ex_dividend_date", "amount", "record_date"} <= set(dividends.columns)
    fetched = last_actions_fetch(home, "AAA")
    assert fetched is not None and fetched >= before, "the check's time is kept without rows"
    files(home, "AAA")[1].unlink()
    assert last_actions_fetch(home, "AAA") is None, "half a pair is no fetch"


def test_an_unknown_field_is_kept_as_one_more_column(
    stub: AlphaVantageStub, make_client: MakeClient, home: DataHome
) -> None:
    stub.set_actions("AAA", "SPLITS", [{**SPLITS[0], "note": "spin-off"}])
    fetch_raw_actions(make_client(), home, "AAA")
    assert pl.read_parquet(files(home, "AAA")[0])["note"].to_list() == ["spin-off"]


@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize("fault", RETRIED)
def test_transient_answers_are_retried_then_kept(
    fault: str, function: str, stub: AlphaVantageStub, make_client: MakeClient, home: DataHome
) -> None:
    stub.set_actions("AAA", "SPLITS", SPLITS)
    stub.script_actions("AAA", function, fault, fault)
    result = fetch_raw_actions(make_client(), home, "AAA")
    assert result.splits == 2 and result.dividends > 0
    assert stub.count("AAA", function) == 3
    assert stub.count("AAA") == 4


def test_retries_give_up_after_the_attempt_limit(
    stub: AlphaVantageStub, make_client: MakeClient, home: DataHome
) -> None:
    stub.script_actions("AAA", "DIVIDENDS", *["http_503"] * 10)
    with pytest.raises(TransientHTTPError, match="AAA: DIVIDENDS: Alpha Vantage answered HTTP 503"):
        fetch_raw_actions(make_client(max_attempts=3), home, "AAA")
    assert stub.count("AAA", "DIVIDENDS") == 3
    assert not any(p.exists() for p in files(home, "AAA")), "nothing written"


@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize("fault", sorted(FAILED_NO_RETRY))
def test_permanent_answers_fail_the_symbol_once_and_keep_the_last_files(
    fault: str, function: str, stub: AlphaVantageStub, make_client: MakeClient, home: DataHome
) -> None:
    client = make_client()
    fetch_raw_actions(client, home, "AAA")
    kept, fetched = snapshot(files(home, "AAA")), last_actions_fetch(home, "AAA")
    requests_before = stub.count("AAA", function)
    stub.set_actions("AAA", "SPLITS", SPLITS)  # a good new answer must not be written alone

    stub.script_actions("AAA", function, fault)
    with pytest.raises(AlphaVantageError) as raised:
        fetch_raw_actions(client, home, "AAA")

    error = raised.value
    assert not isinstance(error, (RetryableError, *STOP_ERRORS))
    assert f"AAA: {function}: " in str(error) and FAILED_NO_RETRY[fault] in str(error)
    assert TEST_KEY not in str(error)
    assert stub.count("AAA", function) == requests_before + 1, "no retry for a permanent answer"
    assert snapshot(files(home, "AAA")) == kept
    assert last_actions_fetch(home, "AAA") == fetched


@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize("fault", sorted(STOPPING))
def test_a_bad_key_or_spent_quota_stops_the_run(
    fault: str, function: str, stub: AlphaVantageStub, make_client: MakeClient, home: DataHome
) -> None:
    client = make_client()
    fetch_raw_actions(client, home, "AAA")
    kept = snapshot(files(home, "AAA"))
    stub.script_actions("AAA", function, fault)
    with pytest.raises(STOP_ERRORS) as raised:
        fetch_raw_actions(client, home, "AAA")
    message = str(raised.value)
    assert f"AAA: {function}: " in message and STOPPING[fault] in message
    assert TEST_KEY not in message, "info_daily echoes the key"
    assert stub.count("AAA", function) == 2
    assert snapshot(files(home, "AAA")) == kept


def test_actions_take_permits_from_the_same_daily_quota_as_the_bars(
    stub: AlphaVantageStub, make_client: MakeClient, home: DataHome
) -> None:
    client = make_client(requests_per_day=3)
    client.fetch_daily("AAA", "compact")
    fetch_raw_actions(client, home, "AAA")
    with pytest.raises(DailyQuotaError, match="ALPHAVANTAGE_REQUESTS_PER_DAY=3"):
        client.fetch_actions("BBB", "SPLITS")
    assert [r.function for r in stub.requests] == ["TIME_SERIES_DAILY", "SPLITS", "DIVIDENDS"]


def test_key_is_in_no_file_log_or_message_after_every_kind_of_failure(
    stub: AlphaVantageStub,
    make_client: MakeClient,
    home: DataHome,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    client = make_client()
    fetch_raw_actions(client, home, "AAA")
    stub.script_actions("BBB", "SPLITS", "reset", "reset", "reset")
    stub.script_actions("CCC", "DIVIDENDS", "error_message")
    stub.script_actions("DDD", "SPLITS", "info_daily")
    stub.script_actions("EEE", "DIVIDENDS", "html")
    messages = []
    for symbol in ("BBB", "CCC", "DDD", "EEE"):
        with pytest.raises(AlphaVantageError) as raised:
            fetch_raw_actions(client, home, symbol)
        messages.append(str(raised.value))

    assert any(r.apikey == TEST_KEY for r in stub.requests), "the stub did receive the key"
    assert "apikey=***" in caplog.text, "urllib3 logged the request line, redacted"
    out, err = capfd.readouterr()
    found = texts_with_secret(
        TEST_KEY, messages="\n".join(messages), log=caplog.text, stdout=out, stderr=err
    )
    assert found == []
    assert places_with_secret(tmp_path, TEST_KEY) == []
    assert list(home.raw_actions_dir.rglob("*.parquet")), "the fetch did write files to search"


@pytest.mark.parametrize(
    ("payload", "text"),
    [
        ([], "not an object"),
        ({"symbol": "AAA"}, "no 'data' list"),
        ({"symbol": "AAA", "data": {"effective_date": "2020-08-31"}}, "no 'data' list"),
        ({"data": []}, "does not say which symbol"),
        ({"symbol": "aaa ", "data": ["2020-08-31"]}, "event 0 of the answer is not a JSON object"),
    ],
)
def test_other_malformed_answers_fail_the_symbol(payload: object, text: str) -> None:
    with pytest.raises(MalformedResponseError, match=text):
        classify_actions("AAA", "SPLITS", payload, api_key=TEST_KEY)


def test_rows_of_a_good_answer_are_returned_as_received() -> None:
    payload = {"symbol": "aaa", "data": DIVIDENDS}
    assert classify_actions("AAA", "DIVIDENDS", payload, api_key=None) == DIVIDENDS
    assert classify_actions("AAA", "SPLITS", {"symbol": "AAA", "data": []}, api_key=None) == []


def price_drops(symbol: str) -> list[tuple[str, float]]:
    """Days with a price (open or close) below a third of the last price before, and the ratio.

    The sample's bad rows (an empty close, a zero open) are skipped, not read as prices.
    """
    drops, last = [], 0.0
    for date, bar in daily_bars(symbol):
        prices = [float(bar[k]) for k in ("1. open", "4. close") if bar[k] and float(bar[k]) > 0]
        if last and prices[0] < last / 3:
            drops.append((date, last / prices[0]))
        last = prices[-1]
    return drops


@pytest.mark.parametrize("symbol", ["AAPL", "MSFT", "IBM", "ZZ"])
def test_sample_split_is_declared_on_the_day_of_its_price_drop(symbol: str, home: DataHome) -> None:
    client = AlphaVantageClient(home=home, api_key=None, base_url="", requests_per_second=1,
                                requests_per_minute=5, requests_per_day=25)  # fmt: skip
    fetched = client.fetch_actions(symbol, "SPLITS")
    [(date, ratio)] = price_drops(symbol)
    assert fetched.rows == [{"effective_date": date, "split_factor": "4.0000"}]
    assert split_date(symbol).isoformat() == date
    assert 3.8 < ratio < 4.2
    daily = client.fetch_daily(symbol, "compact")
    assert date in daily.series, "the split is inside the compact window"
    assert client.fetch_actions(symbol, "SPLITS").rows == fetched.rows, "deterministic"


@pytest.mark.parametrize("symbol", ["AAPL", "MSFT", "IBM", "ZZ"])
def test_sample_dividends_are_quarterly_strings_with_old_nones_and_one_declared_ahead(
    symbol: str, home: DataHome
) -> None:
    client = AlphaVantageClient(home=home, api_key=None, base_url="", requests_per_second=1,
                                requests_per_minute=5, requests_per_day=25)  # fmt: skip
    rows = client.fetch_actions(symbol, "DIVIDENDS").rows
    assert rows == client.fetch_actions(symbol, "DIVIDENDS").rows, "deterministic"
    assert all(isinstance(v, str) for row in rows for v in row.values())
    ex_dates = [dt.date.fromisoformat(r["ex_dividend_date"]) for r in rows]
    assert ex_dates == sorted(ex_dates, reverse=True), "newest first"
    bars = daily_bars(symbol)
    last_bar, trading = dt.date.fromisoformat(bars[-1][0]), {d for d, _ in bars}
    assert sum(d > last_bar for d in ex_dates) == 1, "one declared future dividend"
    past = [d for d in ex_dates if d <= last_bar]
    assert len(past) == 4 * 6 and all(d.isoformat() in trading for d in past), "quarterly"
    assert split_date(symbol) not in ex_dates
    assert all(0 < float(r["amount"]) < 0.05 * 400 for r in rows)
    unrecorded = [r for r in rows if r["declaration_date"] == "None"]
    assert len(unrecorded) == 3 and unrecorded == rows[-3:], "the oldest rows"
    assert all(r["record_date"] == r["payment_date"] == "None" for r in unrecorded)
    for row in rows[:-3]:
        ex = row["ex_dividend_date"]
        assert row["declaration_date"] < ex <= row["record_date"] < row["payment_date"]


def test_sample_dividends_follow_the_split(home: DataHome) -> None:
    """A dividend after the split pays about a quarter of one before it: per share."""
    rows = AlphaVantageClient(home=home, api_key=None, base_url="", requests_per_second=1,
                              requests_per_minute=5, requests_per_day=25
                              ).fetch_actions("AAPL", "DIVIDENDS").rows  # fmt: skip
    split = split_date("AAPL").isoformat()
    before = [float(r["amount"]) for r in rows if r["ex_dividend_date"] < split]
    after = [float(r["amount"]) for r in rows if r["ex_dividend_date"] > split]
    assert after and before
    assert after[-1] < before[0] / 2
