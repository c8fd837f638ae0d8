"""The one mapping of the readers' domain errors to HTTP answers (``market_api.http.errors``),
driven through a real Litestar app whose routes raise each error as a reader would."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from litestar import Litestar, get
from litestar.testing import TestClient

from market_api.http.errors import EXCEPTION_HANDLERS, NO_HISTORY
from market_api.readers.errors import (
    HistoryNotKept,
    ReadError,
    SnapshotNotFound,
    StoreUnavailable,
    UnknownSymbol,
)
from market_api.readers.file import FileReader
from market_core.home import DataHome

RAISED: dict[str, ReadError] = {
    "unknown": UnknownSymbol("ZZZ"),
    "unknown-actions": UnknownSymbol("ZZZ", "bars and no corporate actions"),
    "busy": StoreUnavailable("the data is being updated; retry shortly", retry_after_seconds=4),
    "no-history": HistoryNotKept(),
    "too-old": SnapshotNotFound(datetime(2001, 1, 1), datetime(2024, 3, 1, 12)),
    "unusable": SnapshotNotFound(datetime(2001, 1, 1), usable=True),
}


@get("/raise/{name:str}", sync_to_thread=False)
def raising(name: str) -> None:
    raise RAISED[name]


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient[Litestar]]:
    with TestClient(Litestar([raising], exception_handlers=EXCEPTION_HANDLERS)) as test_client:
        yield test_client


@pytest.mark.parametrize(
    ("name", "status", "error", "detail", "parameter"),
    [
        ("unknown", 404, "unknown_symbol",
         "ZZZ: no bars stored for this symbol; GET /instruments lists them", None),
        ("unknown-actions", 404, "unknown_symbol",
         "ZZZ: no bars and no corporate actions stored for this symbol; GET /instruments lists "
         "them", None),
        ("busy", 503, "data_unavailable", "the data is being updated; retry shortly", None),
        ("no-history", 400, "invalid_parameter", NO_HISTORY, "as_of"),
        ("too-old", 400, "invalid_parameter",
         "as_of 2001-01-01T00:00:00 is before the lake's oldest snapshot "
         "(2024-03-01T12:00:00); give a later time", "as_of"),
        ("unusable", 400, "invalid_parameter",
         "as_of 2001-01-01T00:00:00 is before the lake's oldest usable snapshot", "as_of"),
    ],
)  # fmt: skip
def test_each_domain_error_has_its_status_and_body(
    client: TestClient[Litestar],
    name: str,
    status: int,
    error: str,
    detail: str,
    parameter: str | None,
) -> None:
    response = client.get(f"/raise/{name}")
    assert response.status_code == status
    assert response.json() == {
        "status_code": status,
        "error": error,
        "detail": detail,
        "parameter": parameter,
    }
    assert response.headers["content-type"] == "application/json"


def test_unavailable_says_when_to_retry(client: TestClient[Litestar]) -> None:
    assert client.get("/raise/busy").headers["retry-after"] == "4"
    assert "retry-after" not in client.get("/raise/unknown").headers


def test_the_file_reader_refuses_time_travel_with_the_domain_error(tmp_path: Path) -> None:
    reader = FileReader(DataHome(tmp_path / "home"), wait_seconds=0.1)
    try:
        with pytest.raises(HistoryNotKept):
            reader.check_as_of(datetime(2024, 1, 1))
        with pytest.raises(HistoryNotKept):
            reader.run_at(
                None, lambda cur: cur.execute("SELECT 1").fetchall(), datetime(2024, 1, 1)
            )
        assert reader.run_at("any", lambda cur: cur.execute("SELECT 1").fetchone()) == (1,)
    finally:
        reader.shutdown()
