"""``as_of`` (time travel) in the single-file mode: a clear 400 naming it, never a 500.

The lake mode's time travel is in ``tests/cluster/test_lake_api.py``; here the DuckDB file keeps
no history, so every ``as_of`` is refused, and the answers without it are untouched.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.api.conftest import ApiClient, Dataset


@pytest.mark.parametrize(
    "as_of",
    ["2024-03-01T00:00:00Z", "2024-03-01T12:30:00+02:00", "2024-03-01T00:00:00"],
)
def test_as_of_in_file_mode_is_a_400_naming_it(client: ApiClient, as_of: str) -> None:
    response = client.get(f"/instruments/AAPL/ohlcv?as_of={quote(as_of)}")
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_parameter"
    assert body["parameter"] == "as_of"
    assert "MARKET_POSTGRES_URL" in body["detail"]


@pytest.mark.parametrize(
    "query",
    [
        "as_of=yesterday",
        "as_of=2024-13-01T00:00:00Z",
        "as_of=2024-03-01",  # a date is not a timestamp
        "as_of=",
        "as_of=2024-03-01T00:00:00Z&as_of=2024-03-02T00:00:00Z",
        "as_of=2024-03-01T00:00:00Z' OR 1=1 --",
    ],
)
def test_bad_or_repeated_as_of_is_a_400_naming_it(client: ApiClient, query: str) -> None:
    response = client.get(f"/instruments/AAPL/ohlcv?{query.replace(' ', '%20')}")
    assert response.status_code == 400
    assert response.json()["parameter"] == "as_of"


def test_refused_as_of_leaves_answers_without_it_alone(client: ApiClient, dataset: Dataset) -> None:
    before = client.get("/instruments/AAPL/ohlcv")
    assert client.get("/instruments/AAPL/ohlcv?as_of=2024-03-01T00:00:00Z").status_code == 400
    after = client.get("/instruments/AAPL/ohlcv")
    assert before.status_code == after.status_code == 200
    assert after.content == before.content
    assert len(after.json()["bars"]) == len(dataset.rows["AAPL"])


def test_openapi_documents_as_of_on_ohlcv_only(client: ApiClient) -> None:
    paths = client.get("/schema/openapi.json").json()["paths"]
    ohlcv = {p["name"]: p for p in paths["/instruments/{symbol}/ohlcv"]["get"]["parameters"]}
    assert "as_of" in ohlcv
    param = ohlcv["as_of"]
    assert param["in"] == "query"
    assert not param["required"]
    schemas = param["schema"].get("oneOf", [param["schema"]])
    assert {"type": "string", "format": "date-time"} in [
        {k: s.get(k) for k in ("type", "format")} for s in schemas
    ]
    assert "lake" in param["description"]
    stats = {p["name"] for p in paths["/instruments/{symbol}/stats"]["get"]["parameters"]}
    assert "as_of" not in stats
