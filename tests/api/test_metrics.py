"""``GET /metrics`` over a real granian server, parsed by ``prometheus_client``'s own parser:
the values move with the requests (hits, misses, statuses, latency), two workers' counts are
summed, and the Alpha Vantage calls a run against the stub used show in the run and here."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests
from dagster import DagsterInstance
from prometheus_client.parser import text_string_to_metric_families

from market_core.home import DataHome
from market_pipeline.defs.vendor_usage import CALLS_LEFT_TAG, CALLS_USED_TAG
from tests.api.conftest import Dataset
from tests.conftest import Run
from tests.served_api import serve
from tests.stubs.alpha_vantage import AlphaVantageStub

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
OHLCV = "/instruments/AAPL/ohlcv?start=2024-01-02&end=2024-01-31"


def scrape(base: str) -> Samples:
    answer = requests.get(f"{base}/metrics", timeout=10)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(answer.text)
        for s in family.samples
    }


def requests_of(samples: Samples, route_part: str, status: str) -> float:
    return sum(
        value
        for (name, labels), value in samples.items()
        if name == "market_api_requests_total"
        and route_part in dict(labels)["route"]
        and dict(labels)["status"] == status
    )


def test_the_counts_move_with_hits_misses_and_statuses(dataset: Dataset, tmp_path: Path) -> None:
    with serve(dataset.home, tmp_path / "granian.log") as served:
        before = scrape(served.base)
        assert requests.get(served.base + OHLCV, timeout=10).status_code == 200  # a miss
        assert requests.get(served.base + OHLCV, timeout=10).status_code == 200  # a hit
        assert requests.get(f"{served.base}/instruments/NOPE/ohlcv", timeout=10).status_code == 404
        after = scrape(served.base)

    def moved(name: str) -> float:
        return after.get((name, ()), 0) - before.get((name, ()), 0)

    assert moved("market_api_cache_hits_total") == 1
    assert moved("market_api_cache_misses_total") == 3, "the miss, the 404 and this scrape"
    assert moved("market_api_cache_hit_bytes_total") > 0
    assert requests_of(after, "/ohlcv", "200") - requests_of(before, "/ohlcv", "200") == 2
    assert requests_of(after, "/ohlcv", "404") == 1
    routes = {dict(labels)["route"] for (name, labels) in after if name.startswith("market_api_")
              and "route" in dict(labels)}  # fmt: skip
    assert not any("AAPL" in route or "NOPE" in route for route in routes), routes
    latency = {
        dict(labels)["le"]: value
        for (name, labels), value in after.items()
        if name == "market_api_request_duration_seconds_bucket"
        and "/ohlcv" in dict(labels)["route"]
        and dict(labels)["status"] == "200"
    }
    assert latency["+Inf"] == 2
    assert after[("market_api_stream_clients", ())] == 0
    assert after[("market_api_cache_entries", ())] >= 1
    assert after[("market_api_data_version_age_seconds", ())] >= 0
    newest = max(max(dataset.dates(symbol)) for symbol in dataset.rows)
    assert time.gmtime(after[("market_api_newest_bar_timestamp_seconds", ())])[:3] == (
        newest.year, newest.month, newest.day)  # fmt: skip


def test_two_workers_counts_are_summed(dataset: Dataset, tmp_path: Path) -> None:
    with serve(dataset.home, tmp_path / "granian.log", MARKET_API_WORKERS="2") as served:
        for _ in range(20):
            assert requests.get(f"{served.base}/instruments", timeout=10).status_code == 200
        deadline = time.monotonic() + 30
        while requests_of(samples := scrape(served.base), "/instruments", "200") < 20:
            assert time.monotonic() < deadline, "the workers' counts never added up"
            time.sleep(0.2)
        assert requests_of(samples, "/instruments", "200") == 20
        folders = list((dataset.home.state_dir / "metrics").glob("server-*"))
        assert len(folders) == 1
        pids = {path.stem.rsplit("_", 1)[-1] for path in folders[0].glob("*.db")}
        assert len(pids) == 2, f"one file set per worker: {sorted(pids)}"


def test_a_run_against_the_stub_shows_its_calls_in_the_run_and_the_metrics(
    keyed: AlphaVantageStub,
    run: Run,
    instance: DagsterInstance,
    home: DataHome,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ALPHAVANTAGE_REQUESTS_PER_DAY", "25")
    result = run(["AAA", "BBB"])
    used = len(keyed.requests)
    assert used >= 2
    tags = instance.get_run_by_id(result.run_id).tags  # type: ignore[union-attr]
    assert (tags[CALLS_USED_TAG], tags[CALLS_LEFT_TAG]) == (str(used), str(25 - used))
    with serve(home, tmp_path / "granian.log") as served:
        samples = scrape(served.base)
    assert samples[("market_alpha_vantage_calls_used", ())] == used
    assert samples[("market_alpha_vantage_calls_left", ())] == 25 - used
    assert samples[("market_alpha_vantage_calls_limit", ())] == 25
