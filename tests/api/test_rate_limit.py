"""``MARKET_API_RATE_LIMIT``: per key (per client address with auth off), a 429 with
``Retry-After`` and the IETF ``RateLimit-Policy`` / ``RateLimit`` fields, then service again
once the window has passed."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest
import requests

from market_api.access.stores import FILE_NAME, FileKeyStore
from market_api.settings import RATE_LIMIT_VAR, Quota, Settings, SettingsError
from tests.api.conftest import Dataset, MakeClient
from tests.served_api import serve


def test_over_the_limit_is_a_429_with_its_headers_then_served_after_the_window(
    dataset: Dataset, tmp_path: Path
) -> None:
    """Over real HTTP, auth off (so counted per client address), 3 requests a second."""
    with serve(dataset.home, tmp_path / "granian.log", **{RATE_LIMIT_VAR: "3/second"}) as server:
        answers = [requests.get(f"{server.base}/instruments", timeout=30) for _ in range(10)]
        statuses = [a.status_code for a in answers]
        assert set(statuses) == {200, 429} and statuses[0] == 200, statuses
        served = answers[0]
        assert served.headers["RateLimit-Policy"] == '"default";q=3;w=1'
        assert served.headers["RateLimit"].startswith('"default";r=2;t=')
        refused = next(a for a in answers if a.status_code == 429)
        assert refused.headers["RateLimit-Policy"] == '"default";q=3;w=1'
        assert refused.headers["RateLimit"] == '"default";r=0;t=1'
        assert refused.headers["Retry-After"] == "1"
        body = refused.json()
        assert body["status_code"] == 429 and body["error"] == "rate_limited"
        time.sleep(int(refused.headers["Retry-After"]))
        assert requests.get(f"{server.base}/instruments", timeout=30).status_code == 200
        assert requests.get(f"{server.base}/health", timeout=30).status_code == 200


def test_each_key_has_its_own_count(dataset: Dataset, make_client: MakeClient) -> None:
    store = FileKeyStore(dataset.home.state_dir / FILE_NAME)
    first, second = store.create("first"), store.create("second")
    settings = {"auth": "required", "rate_limit": Quota(2, 3600)}
    client = make_client(dataset.home, **settings)
    for _ in range(2):
        assert client.get("/instruments", headers={"X-API-Key": first}).status_code == 200
    assert client.get("/instruments", headers={"X-API-Key": first}).status_code == 429
    assert client.get("/instruments/AAPL/ohlcv", headers={"X-API-Key": first}).status_code == 429
    assert client.get("/instruments", headers={"X-API-Key": second}).status_code == 200
    assert client.get("/health").status_code == 200  # probes are not counted


@pytest.mark.parametrize("raw", ["600", "ten/minute", "0/minute", "5/week", "5/"])
def test_a_bad_limit_names_the_variable(raw: str) -> None:
    with pytest.raises(SettingsError, match=RATE_LIMIT_VAR):
        Settings.from_env({RATE_LIMIT_VAR: raw})


@pytest.mark.parametrize(
    ("raw", "quota"),
    [("600/minute", Quota(600, 60)), ("5/second", Quota(5, 1)), ("1000/hours", Quota(1000, 3600)),
     ("10_000/day", Quota(10_000, 86400)), ("", None), ("off", None)],
)  # fmt: skip
def test_limits_read(raw: str, quota: Quota | None) -> None:
    assert replace(Settings.from_env({RATE_LIMIT_VAR: raw})).rate_limit == quota
