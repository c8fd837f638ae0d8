"""Hostile input and the read-only guarantee, against the app itself (Litestar's TestClient).

The same probes run against the served app (granian) in test_api_served.py.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from litestar.testing import TestClient

from market_api.app import create_app
from market_api.http.fastpath import CacheFirst
from market_api.settings import Settings
from market_core.home import DataHome
from market_core.schema import TABLE
from tests.reliability import api_data
from tests.reliability.probes import probes, verdict


@pytest.fixture(scope="module")
def data_home(tmp_path_factory: pytest.TempPathFactory) -> DataHome:
    home = DataHome(tmp_path_factory.mktemp("api") / "home")
    api_data.build(home)
    return home


@pytest.fixture
def api(data_home: DataHome) -> CacheFirst:
    return create_app(Settings(home=data_home))


@pytest.fixture
def client(api: CacheFirst) -> Iterator[TestClient[CacheFirst]]:
    with TestClient(app=api) as test_client:
        yield test_client


def test_every_probe_is_rejected_or_answered_with_the_right_symbol_only(
    client: TestClient[CacheFirst],
) -> None:
    instruments = client.get("/instruments").json()
    assert len(instruments["instruments"]) == len(api_data.SYMBOLS)
    for symbol in api_data.SYMBOLS:  # the data set is what the probes assume
        assert client.get(f"/instruments/{symbol}/ohlcv").status_code == 200
    problems = []
    for probe in probes():
        response = client.get(probe.url, headers=probe.headers)
        content_type = response.headers.get("content-type", "")
        problems += verdict(probe, response.status_code, content_type, response.content)
    assert not problems, "\n".join(problems)
    assert client.get("/instruments").json() == instruments


def test_the_api_cannot_write_its_duckdb_file(
    api: CacheFirst, client: TestClient[CacheFirst], data_home: DataHome, tmp_path: Path
) -> None:
    """Its connection is read-only: another process can open the file read-only meanwhile
    (impossible while anyone holds it read-write), and a write through it is refused."""
    assert client.get("/instruments").status_code == 200
    service = api.app.state["service"]
    assert service.reader.is_open
    other = subprocess.run(
        [sys.executable, "-c", "import duckdb, sys; duckdb.connect(sys.argv[1], read_only=True)"
         ".execute('SELECT count(*) FROM ohlcv_data').fetchall()", str(data_home.duckdb_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert other.returncode == 0, other.stderr
    with pytest.raises(duckdb.Error, match="read-only"):
        service.reader.run(lambda cur: cur.execute(f"DELETE FROM {TABLE}").fetchall())
    assert client.get("/instruments/AAPL/stats").json()["count"] == api_data.DAYS
