"""API fixtures: a real DuckDB file of generated bars, and TestClients on create_app().

The data set is small but has the shapes the API must get right: three symbols (one with a dot),
weekends and a holiday missing as on a real exchange, a two-week gap in AAPL (a whole ISO week
without bars), and several calendar months. Tests compare the API with ``Dataset.rows``, read
back from the file after loading, i.e. with the table itself.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from litestar.testing import TestClient
from litestar.types import ASGIApp

from market_api.app import create_app
from market_api.bars.service import MarketService
from market_api.http.fastpath import CacheFirst
from market_api.settings import Settings
from market_core.home import DataHome
from tests.api.writer import Row, load

REPO_ROOT = Path(__file__).resolve().parents[2]

HOLIDAYS = {date(2024, 1, 1), date(2024, 1, 15), date(2024, 2, 19), date(2024, 3, 29)}
AAPL_GAP = (date(2024, 2, 12), date(2024, 2, 23))
SPANS = {
    "AAPL": (date(2023, 11, 1), date(2024, 4, 30)),
    "MSFT": (date(2024, 1, 2), date(2024, 3, 28)),
    "BRK.B": (date(2024, 3, 1), date(2024, 3, 15)),
}


def generate_bars(symbol: str, first: date, last: date) -> list[Row]:
    """Deterministic, valid bars on weekdays that are not holidays (nor in AAPL's gap)."""
    seed = sum(map(ord, symbol))
    rows: list[Row] = []
    day, i = first, 0
    while day <= last:
        in_gap = symbol == "AAPL" and AAPL_GAP[0] <= day <= AAPL_GAP[1]
        if day.weekday() < 5 and day not in HOLIDAYS and not in_gap:
            base = 40 + seed % 60 + i * 0.37 + ((i * 7919 + seed) % 13) * 0.11
            open_ = round(base, 2)
            close = round(base + ((i % 5) - 2) * 0.23, 2)
            high = round(max(open_, close) + 0.5 + (i % 3) * 0.1, 2)
            low = round(min(open_, close) - 0.4 - (i % 4) * 0.05, 2)
            volume = 1_000_000 + (i * 104_729 + seed) % 500_000
            rows.append((datetime.combine(day, datetime.min.time()), symbol, open_, high, low,
                         close, volume))  # fmt: skip
            i += 1
        day += timedelta(days=1)
    return rows


@dataclass(frozen=True)
class Dataset:
    home: DataHome
    rows: dict[str, list[Row]]
    """Per symbol, ascending by timestamp, as read back from the table."""

    def dates(self, symbol: str) -> list[date]:
        return [row[0].date() for row in self.rows[symbol]]


def read_table(path: Path) -> dict[str, list[Row]]:
    conn = duckdb.connect(str(path), read_only=True)
    try:
        fetched = conn.execute("SELECT * FROM ohlcv_data ORDER BY symbol, timestamp").fetchall()
    finally:
        conn.close()
    rows: dict[str, list[Row]] = {}
    for row in fetched:
        rows.setdefault(row[1], []).append(row)
    return rows


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """Loaded once per session through the writer's own path; tests get a copy."""
    home = DataHome(tmp_path_factory.mktemp("template") / "home")
    load(home, [row for sym, (a, b) in SPANS.items() for row in generate_bars(sym, a, b)])
    return Dataset(home, read_table(home.duckdb_path))


@pytest.fixture
def dataset(template: Dataset, tmp_path: Path) -> Dataset:
    """A private copy of the data home, so a test may write to it; mtimes kept, so it is the
    same data version (``market_core.data_version``)."""
    home = DataHome(tmp_path / "home")
    home.root.mkdir()
    for path in (template.home.duckdb_path, template.home.version_path):
        shutil.copy2(path, home.root / path.name)
    return Dataset(home, template.rows)


class ApiClient(TestClient[ASGIApp]):
    """A TestClient on what ``create_app()`` returns (the cache-first layer in front of the
    Litestar app, so tests go through the fast path as served), knowing the app's service."""

    def __init__(self, api: CacheFirst, **kwargs: Any) -> None:
        super().__init__(app=api, **kwargs)
        self.service: MarketService = api.app.state["service"]


MakeClient = Callable[..., ApiClient]


@pytest.fixture
def make_client() -> Iterator[MakeClient]:
    """``make_client(home, **settings)``: a started app (lifespan run) and its TestClient."""
    with ExitStack() as stack:

        def _make(home: DataHome, **overrides: object) -> ApiClient:
            settings = replace(Settings(home=home), **overrides)  # type: ignore[arg-type]
            return stack.enter_context(ApiClient(create_app(settings)))

        yield _make


@pytest.fixture
def client(dataset: Dataset, make_client: MakeClient) -> ApiClient:
    return make_client(dataset.home)


def assert_bad_parameter(response: Any, parameter: str) -> None:
    """A 400 in the one error shape, naming ``parameter`` (a TestClient or requests answer)."""
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["parameter"] == parameter and body["error"] == "invalid_parameter", body


def service_of(client: ApiClient) -> MarketService:
    return client.service


def run_writer(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The writer as its own process, as the pipeline's loader runs in production."""
    return subprocess.run(
        [sys.executable, "-m", "tests.api.writer", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
