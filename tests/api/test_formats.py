"""Arrow, Parquet and CSV answers as real clients read them from the live URL.

``polars.read_parquet(url)``, ``pandas.read_csv(url)`` and ``pyarrow.ipc.open_stream`` on the
response body must give exactly the rows of the JSON answer, on ``/bars`` and on
``/instruments/{symbol}/ohlcv``. The data home holds 200 symbols x 750 trading days (150,000
bars, written in one statement the way a loader commits), the intraday bars of
``test_intraday`` and a few splits and dividends, so the Parquet answer of every bar has
several row groups and polars reads it in several byte ranges.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from datetime import date, datetime
from typing import Any

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests

from market_core.handoff import exclusive_write
from market_core.home import DataHome
from market_core.schema import CREATE_TABLE_SQL, TABLE
from tests.api.conftest import Dataset
from tests.api.test_adjustments import dividend, split
from tests.api.test_intraday import EVENTS, ROWS, copy_home, load_intraday
from tests.api.writer import connect_with_backoff
from tests.served_api import serve

ARROW = "application/vnd.apache.arrow.stream"
SYMBOLS = 200
DAYS = 750
Row = tuple[Any, ...]

_BARS_SQL = f"""
INSERT INTO {TABLE}
SELECT day, symbol, open, open + 1.25, open - 0.75, open + (n % 7 - 3) * 0.11, 1000 + n * 3
FROM (
    SELECT
        CAST(d.day AS TIMESTAMP) AS day,
        'S' || lpad(CAST(s.i AS VARCHAR), 3, '0') AS symbol,
        round(20 + s.i * 0.37 + d.n * 0.013 + (s.i * d.n) % 17 * 0.01, 2) AS open,
        s.i * 1000 + d.n AS n
    FROM range({SYMBOLS}) AS s(i),
         (SELECT day, row_number() OVER (ORDER BY day) AS n
          FROM range(DATE '2021-01-04', DATE '2024-12-31', INTERVAL 1 DAY) AS t(day)
          WHERE dayofweek(day) BETWEEN 1 AND 5
          QUALIFY n <= {DAYS}) AS d
)
"""


def load_many(home: DataHome) -> None:
    """The loader's side, as ``writer.load`` does it, with the bars made in SQL."""
    with exclusive_write(home) as handoff:
        conn, _ = connect_with_backoff(home.duckdb_path)
        try:
            conn.execute(CREATE_TABLE_SQL)
            conn.execute(_BARS_SQL)
        finally:
            conn.close()
        handoff.finish(changed=True)


EXTRA_EVENTS = [
    split("S007", date(2022, 6, 1), 3.0),
    dividend("S007", date(2023, 2, 1), 0.4),
    dividend("S150", date(2021, 9, 15), 1.1),
]


@pytest.fixture(scope="module")
def served(template: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The API with its defaults (batches of 131,072 bars, answers up to 1 MiB cached)."""
    root = tmp_path_factory.mktemp("formats")
    home = copy_home(template, root / "home")
    load_many(home)
    load_intraday(home, ROWS, [*EVENTS, *EXTRA_EVENTS])
    with serve(home, root / "granian.log", MARKET_API_CACHE_ENTRIES="100") as api:
        yield api.base


def as_json_value(value: Any) -> Any:
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return value


def json_rows(page: dict[str, Any]) -> list[Row]:
    """The JSON answer's bars as rows: symbol first for ``/bars``."""
    keys = ("timestamp", "open", "high", "low", "close", "volume")
    if "symbol" in page:
        return [tuple(bar[k] for k in keys) for bar in page["bars"]]
    return [(s, *(bar[k] for k in keys)) for s, bars in page["bars"].items() for bar in bars]


def frame_rows(rows: Sequence[Row]) -> list[Row]:
    return [tuple(as_json_value(v) for v in row) for row in rows]


BARS = [
    "/bars?limit=1000000",
    "/bars?symbols=S007,S150,AAPL&adjustment=all&limit=1000000",
    "/bars?interval=1w&adjustment=split&start=2022-01-01&end=2022-12-31&limit=1000000",
    "/bars?interval=1min&adjustment=split&limit=1000000",
    "/bars?start=2023-03-01&end=2023-03-01",
    "/bars?limit=70000",
]
SERIES = [
    "/instruments/S007/ohlcv",
    "/instruments/S007/ohlcv?adjustment=all&limit=300",
    "/instruments/S007/ohlcv?interval=1mo&adjustment=dividend",
    "/instruments/AAPL/ohlcv?interval=1min&adjustment=split&start=2024-03-05T10:00",
    "/instruments/AAPL/ohlcv?interval=1w&limit=3",
]


@pytest.mark.e2e
@pytest.mark.parametrize("path", BARS + SERIES)
def test_real_clients_read_the_live_url_with_the_rows_of_the_json_answer(
    served: str, path: str
) -> None:
    page = requests.get(f"{served}{path}", timeout=60).json()
    expected = json_rows(page)
    assert expected
    joiner = "&" if "?" in path else "?"

    from_polars = pl.read_parquet(f"{served}{path}{joiner}format=parquet")
    assert frame_rows(from_polars.rows()) == expected

    from_pandas = pd.read_csv(f"{served}{path}{joiner}format=csv")
    assert [tuple(row) for row in from_pandas.itertuples(index=False)] == expected

    with requests.get(
        f"{served}{path}", headers={"Accept": ARROW}, stream=True, timeout=60
    ) as response:
        assert response.headers["content-type"] == ARROW
        table = pa.ipc.open_stream(response.raw).read_all()
    assert frame_rows([tuple(r.values()) for r in table.to_pylist()]) == expected
    if page.get("next_page_token"):  # the other formats end where JSON's page does
        assert len(from_polars) == len(expected) == 70000


@pytest.mark.e2e
def test_typed_columns(served: str) -> None:
    def schema(path: str) -> pa.Schema:
        body = requests.get(f"{served}{path}", timeout=60).content
        return pq.read_schema(io.BytesIO(body))

    daily = schema("/bars?symbols=S001&format=parquet")
    assert daily.names == ["symbol", "timestamp", "open", "high", "low", "close", "volume"]
    assert [daily.field(n).type for n in daily.names] == [
        pa.string(), pa.date32(), *[pa.float64()] * 4, pa.int64()]  # fmt: skip
    intraday = schema("/instruments/AAPL/ohlcv?interval=5min&format=parquet")
    assert intraday.names == ["timestamp", "open", "high", "low", "close", "volume"]
    assert intraday.field("timestamp").type == pa.timestamp("us", tz="America/New_York")
    weekly = schema("/instruments/S001/ohlcv?interval=1w&format=parquet")
    assert weekly.field("timestamp").type == pa.date32()
    first = pl.read_parquet(f"{served}/instruments/AAPL/ohlcv?interval=5min&format=parquet")
    assert str(first["timestamp"][0]) == "2024-03-04 09:30:00-05:00"


@pytest.mark.e2e
def test_accept_and_format_choose_the_answer(served: str) -> None:
    path = f"{served}/instruments/S001/ohlcv?limit=2"
    arrow, parquet, json = ARROW, "application/vnd.apache.parquet", "application/json"
    cases = [
        ({"Accept": arrow}, "", arrow),
        ({"Accept": parquet}, "", parquet),
        ({"Accept": f"{parquet};q=0.5, {json}"}, "", json),
        ({"Accept": "text/csv"}, "&format=arrow", arrow),
        ({"Accept": parquet}, "&format=json", json),
        ({}, "&format=csv", "text/csv; charset=utf-8"),
    ]
    for headers, query, media_type in cases:
        answer = requests.get(path + query, headers=headers, timeout=30)
        assert answer.status_code == 200
        assert answer.headers["content-type"] == media_type, (headers, query)
        tagged = {**headers, "If-None-Match": answer.headers["etag"]}
        assert requests.get(path + query, headers=tagged, timeout=30).status_code == 304
    assert requests.get(path + "&format=parquet", timeout=30).content[:4] == b"PAR1"
    unknown = requests.get(f"{served}/instruments/NOPE/ohlcv?format=arrow", timeout=30)
    assert unknown.status_code == 404
