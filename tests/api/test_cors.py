"""``MARKET_API_CORS_ORIGINS``: Litestar's CORS config answers the preflight, and every answer
to an allowed origin carries the CORS headers, cache hits included, without storing them."""

from __future__ import annotations

import httpx

from market_api.access.stores import FILE_NAME, FileKeyStore
from market_api.settings import CORS_VAR, Quota, Settings
from tests.api.conftest import Dataset, MakeClient

ORIGIN = "https://charts.example"


def test_preflight_then_simple_gets_miss_and_hit(dataset: Dataset, make_client: MakeClient) -> None:
    key = FileKeyStore(dataset.home.state_dir / FILE_NAME).create("web")
    client = make_client(dataset.home, auth="required", cors_origins=(ORIGIN,))
    preflight = client.options(
        "/instruments/AAPL/ohlcv",
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET",
                 "Access-Control-Request-Headers": "x-api-key"},
    )  # fmt: skip
    assert preflight.status_code == 204  # no key: a browser's preflight never carries one
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert "x-api-key" in preflight.headers["access-control-allow-headers"]
    for _ in range(2):  # a miss, then a hit
        answer = client.get("/instruments/AAPL/ohlcv", headers={"Origin": ORIGIN, "X-API-Key": key})
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == ORIGIN
        assert _exposed(answer.headers) >= {"etag", "next-page-token", "missing-symbols"}
        vary = answer.headers["vary"].lower()
        assert "origin" in vary and "accept" in vary
    plain = client.get("/instruments/AAPL/ohlcv", headers={"X-API-Key": key})
    assert "access-control-allow-origin" not in plain.headers
    assert plain.headers["vary"].lower() == "accept"
    other = client.get("/instruments/AAPL/ohlcv", headers={"Origin": "https://evil.example",
                                                           "X-API-Key": key})  # fmt: skip
    assert "access-control-allow-origin" not in other.headers
    refused = client.get("/instruments/AAPL/ohlcv", headers={"Origin": ORIGIN})
    assert refused.status_code == 401  # and the browser may read why
    assert refused.headers["access-control-allow-origin"] == ORIGIN


def test_paging_and_rate_limit_headers_are_readable_by_scripts(
    dataset: Dataset, make_client: MakeClient
) -> None:
    key = FileKeyStore(dataset.home.state_dir / FILE_NAME).create("web")
    client = make_client(
        dataset.home, auth="required", rate_limit=Quota(1000, 3600), cors_origins=(ORIGIN,)
    )
    page = client.get(
        "/bars?symbols=AAPL,NOPE&limit=1&format=csv", headers={"Origin": ORIGIN, "X-API-Key": key}
    )
    assert page.status_code == 200
    assert page.headers["next-page-token"] and page.headers["missing-symbols"] == "NOPE"
    assert "ratelimit" in page.headers and "etag" in page.headers
    exposed = _exposed(page.headers)
    assert {
        "next-page-token",
        "missing-symbols",
        "etag",
        "ratelimit",
        "ratelimit-policy",
    } <= exposed


def _exposed(headers: httpx.Headers) -> set[str]:
    value = headers.get("access-control-expose-headers", "")
    return {name.strip().lower() for name in value.split(",")}


def test_no_origins_by_default_and_a_list_read() -> None:
    assert Settings.from_env({}).cors_origins == ()
    origins = Settings.from_env({CORS_VAR: "https://a.example, https://b.example"}).cors_origins
    assert origins == ("https://a.example", "https://b.example")
