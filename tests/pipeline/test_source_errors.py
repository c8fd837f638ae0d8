"""Each Alpha Vantage answer shape gets its deliberate handling, through a real run."""

from __future__ import annotations

import pytest

from market_core.home import DataHome
from tests.conftest import TEST_KEY, Run
from tests.pipeline.helpers import failure_text, materialized, recent_bars, snapshot, table_rows
from tests.stubs.alpha_vantage import AlphaVantageStub, Request

RETRIED = ["note_frequency", "info_burst", "http_429", "http_500", "http_503", "reset", "timeout"]
FAILED_NO_RETRY = {
    "error_message": "refused the call",
    "truncated": "truncated or invalid JSON",
    "html": "HTML page",
    "empty_object": "empty object",
    "empty_series": "empty time series",
    "wrong_symbol": "series for 'ZZZZ'",
}


def bar_requests(stub: AlphaVantageStub) -> list[Request]:
    """The TIME_SERIES_DAILY calls (a first load also asks for SPLITS and DIVIDENDS)."""
    return [r for r in stub.requests if r.function == "TIME_SERIES_DAILY"]


@pytest.mark.parametrize("fault", RETRIED)
def test_transient_answers_are_retried_then_loaded(
    fault: str, keyed: AlphaVantageStub, run: Run, home: DataHome
) -> None:
    keyed.script("AAA", fault, fault)
    result = run(["AAA"])
    assert result.success, failure_text(result)
    assert keyed.count("AAA", "TIME_SERIES_DAILY") == 3
    assert len(table_rows(home, "AAA")) > 1000


@pytest.mark.parametrize("fault", sorted(FAILED_NO_RETRY))
def test_permanent_answers_fail_the_symbol_once_and_keep_old_data(
    fault: str, keyed: AlphaVantageStub, run: Run, home: DataHome
) -> None:
    assert run(["AAA", "BBB"]).success
    files = [home.raw_file("AAA"), home.clean_file("AAA"), home.rejects_file("AAA")]
    before_files, before_rows = snapshot(files), table_rows(home, "AAA")
    requests_before = keyed.count("AAA")

    keyed.script("AAA", fault)
    result = run(["AAA", "BBB"])

    assert not result.success
    message = failure_text(result)
    assert "AAA" in message and FAILED_NO_RETRY[fault] in message
    assert TEST_KEY not in message
    assert keyed.count("AAA") == requests_before + 1, "no retry for a permanent answer"
    assert snapshot(files) == before_files
    assert table_rows(home, "AAA") == before_rows
    assert materialized(result, "ohlcv_data") == {"BBB"}


def test_retries_give_up_after_the_attempt_limit(keyed: AlphaVantageStub, run: Run) -> None:
    keyed.script("AAA", *["http_503"] * 10)
    result = run(["AAA"], max_attempts=3)
    assert not result.success
    assert keyed.count("AAA") == 3
    assert "HTTP 503" in failure_text(result)


@pytest.mark.parametrize(
    ("fault", "text"),
    [
        ("invalid_key", "rejected the API key"),
        ("info_demo", "demo key"),
        ("info_daily", "retry after the quota resets"),
    ],
)
def test_a_bad_key_or_spent_quota_stops_the_run(
    fault: str, text: str, keyed: AlphaVantageStub, run: Run, home: DataHome
) -> None:
    keyed.script("BBB", fault)
    result = run(["AAA", "BBB", "CCC"])
    assert not result.success
    message = failure_text(result)
    assert text in message and "CCC: not attempted" in message
    assert TEST_KEY not in message
    assert [r.symbol for r in keyed.requests] == ["AAA", "BBB"]
    assert materialized(result, "ohlcv_data") == {"AAA"}


def test_premium_refusal_falls_back_to_compact_and_is_remembered(
    keyed: AlphaVantageStub, run: Run, home: DataHome
) -> None:
    keyed.premium_full = False
    result = run(["AAA", "BBB"])
    assert result.success, failure_text(result)
    sizes = [(r.symbol, r.outputsize) for r in bar_requests(keyed)]
    assert sizes == [("AAA", "full"), ("AAA", "compact"), ("BBB", "compact")]
    assert len(table_rows(home, "BBB")) == 100 - 3  # the sample's three bad rows are rejected


def test_auto_outputsize_is_full_first_then_compact_while_recent(
    keyed: AlphaVantageStub, run: Run
) -> None:
    keyed.set_bars("AAA", recent_bars(30))
    assert run(["AAA"]).success
    assert run(["AAA"]).success
    keyed.set_bars("OLD", [("2020-01-02", recent_bars(1)[0][1])])
    assert run(["OLD"]).success
    assert run(["OLD"]).success, "a stale symbol needs full again to bridge its gap"
    sizes = [(r.symbol, r.outputsize) for r in bar_requests(keyed)]
    assert sizes == [("AAA", "full"), ("AAA", "compact"), ("OLD", "full"), ("OLD", "full")]


def test_outputsize_compact_is_honoured(
    keyed: AlphaVantageStub, run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALPHAVANTAGE_OUTPUTSIZE", "compact")
    assert run(["AAA"]).success
    assert [r.outputsize for r in bar_requests(keyed)] == ["compact"]
