"""``GET /listings`` (and the listing fields of ``/instruments``) served by granian, on a data
home whose bars were loaded by the pipeline's file store and whose listings by the pipeline's
listings stage from the offline sample's LISTING_STATUS answers (a reused ticker, delisted
symbols, odd entries rejected)."""

from __future__ import annotations

import datetime as dt
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import exchange_calendars
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests

from market_core.home import DataHome
from market_core.schema import COLUMNS
from market_pipeline.daily.completeness import MISSING_SESSIONS, session_report
from market_pipeline.listings.clean import refresh_listings
from market_pipeline.source.client import AlphaVantageClient
from market_pipeline.source.sample import LISTINGS, SAMPLE_BASE_URL
from market_pipeline.store.duckdb_file import DuckDBFileStore
from market_pipeline.store.listings import FileListings
from tests.api.conftest import assert_bad_parameter
from tests.served_api import Served, serve

XNYS = exchange_calendars.get_calendar("XNYS")
BARS = {
    # symbol: (first, last, removed sessions)
    "AAPL": (dt.date(2024, 1, 2), dt.date(2024, 3, 28), {dt.date(2024, 2, 5)}),
    "AAC": (dt.date(2022, 6, 1), dt.date(2022, 8, 31), set()),  # the 2021 company's
    # Bars past the delisting (2022-11-08) do not count; 2022-10-03 before it does.
    "TWTR": (dt.date(2022, 9, 1), dt.date(2022, 11, 30), {dt.date(2022, 10, 3)}),
    "ZZZ": (dt.date(2024, 1, 2), dt.date(2024, 1, 31), {dt.date(2024, 1, 10)}),  # no listing
}
REJECTED = {"NEE 6.219", "SO 6.75 08-01-22", "CHNG 6"}


def bar_days(symbol: str) -> list[dt.date]:
    first, last, removed = BARS[symbol]
    return [s.date() for s in XNYS.sessions_in_range(first, last) if s.date() not in removed]


def bars_frame(symbol: str) -> pl.DataFrame:
    days = bar_days(symbol)
    n = len(days)
    return pl.DataFrame(
        {
            "timestamp": [dt.datetime.combine(d, dt.time()) for d in days],
            "symbol": [symbol] * n,
            "open": [10.0 + i for i in range(n)],
            "high": [11.0 + i for i in range(n)],
            "low": [9.0 + i for i in range(n)],
            "close": [10.5 + i for i in range(n)],
            "volume": [1000 + i for i in range(n)],
        }
    ).select(COLUMNS)


def sample_listings(home: DataHome) -> None:
    """The pipeline's listings stage on the offline sample's answers."""
    client = AlphaVantageClient(
        home=home, api_key=None, base_url=SAMPLE_BASE_URL, requests_per_second=5,
        requests_per_minute=75, requests_per_day=25,
    )  # fmt: skip
    try:
        refresh_listings(client, home, FileListings(DuckDBFileStore(home.duckdb_path, home=home)))
    finally:
        client.close()


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> DataHome:
    home = DataHome(tmp_path_factory.mktemp("universe") / "home")
    DuckDBFileStore(home.duckdb_path, home=home).load([bars_frame(s) for s in BARS])
    sample_listings(home)
    return home


@pytest.fixture(scope="module")
def server(home: DataHome, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve(home, tmp_path_factory.mktemp("log") / "granian.log") as served:
        yield served


def stored(home: DataHome) -> list[dict[str, Any]]:
    """The table itself, by symbol then ipo_date, as JSON would give it."""
    with duckdb.connect(str(home.duckdb_path), read_only=True) as conn:
        frame = conn.execute("SELECT * FROM listings ORDER BY symbol, ipo_date").pl()
    return [
        {k: v.isoformat() if isinstance(v, dt.date) else v for k, v in row.items()}
        for row in frame.iter_rows(named=True)
    ]


def get(server: Served, **params: Any) -> requests.Response:
    return requests.get(f"{server.base}/listings", params=params, timeout=30)


def page(server: Served, **params: Any) -> dict[str, Any]:
    response = get(server, **params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def symbols(body: dict[str, Any]) -> list[str]:
    return [entry["symbol"] for entry in body["listings"]]


def test_every_listing_is_the_table_plus_has_bars(server: Served, home: DataHome) -> None:
    """status=all is the whole table; a ticker reused by a later company is two entries, and
    only the company whose life the bars fall in has them."""
    body = page(server, status="all")
    rows = stored(home)
    assert len(rows) == len(LISTINGS["active"]) + len(LISTINGS["delisted"]) - len(REJECTED)
    assert [{k: v for k, v in e.items() if k != "has_bars"} for e in body["listings"]] == rows
    assert body["next_page_token"] is None
    aac = [e for e in body["listings"] if e["symbol"] == "AAC"]
    assert [(e["name"], e["ipo_date"], e["delisting_date"], e["status"], e["has_bars"])
            for e in aac] == [
        ("AAC Holdings Inc", "2014-10-02", "2020-01-14", "delisted", False),
        ("Ares Acquisition Corporation - Class A", "2021-03-25", None, "active", True),
    ]  # fmt: skip
    with_bars = {e["symbol"] for e in body["listings"] if e["has_bars"]}
    assert with_bars == {"AAPL", "AAC", "TWTR"}, "ZZZ has bars but no listing"


def test_status_filters_and_defaults_to_active(server: Served, home: DataHome) -> None:
    rows = stored(home)
    active = page(server)["listings"]
    assert active == page(server, status="active")["listings"]
    assert [e["symbol"] for e in active] == [r["symbol"] for r in rows if r["status"] == "active"]
    delisted = symbols(page(server, status="delisted"))
    assert delisted == ["AAC", "ATVI", "TWTR", "XLNX", "YHOO"]
    assert "TWTR" not in symbols(page(server))


def test_exchange_asset_type_and_search(server: Served, home: DataHome) -> None:
    rows = [r for r in stored(home) if r["status"] == "active"]
    nyse = symbols(page(server, exchange="nyse"))
    assert nyse == [r["symbol"] for r in rows if r["exchange"] == "NYSE"]
    both = symbols(page(server, exchange="NYSE ARCA, nasdaq"))
    assert both == [r["symbol"] for r in rows if r["exchange"] in ("NYSE ARCA", "NASDAQ")]
    assert symbols(page(server, asset_type="ETF")) == ["QQQ", "SPY"]
    assert symbols(page(server, asset_type="ETF", exchange="NASDAQ")) == ["QQQ"]
    assert symbols(page(server, search="aa")) == ["AAC", "AAC-U", "AAPL"]  # symbol prefix
    assert symbols(page(server, search="micro")) == ["MSFT"]  # name prefix, any case
    assert symbols(page(server, search="Corp")) == []  # a prefix, not a substring
    assert symbols(page(server, exchange="LSE")) == []


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        # The old AAC (2014-10-02..2020-01-14) and Twitter (until 2022-11-08) were listed.
        ("2015-01-05", {"AAC": "2014-10-02", "TWTR": "2013-11-07", "AAPL": "1980-12-12"}),
        # Listed on its IPO day; no longer on its delisting day.
        ("2014-10-02", {"AAC": "2014-10-02"}),
        ("2020-01-14", {"AAC": None}),
        ("2022-11-07", {"TWTR": "2013-11-07", "AAC": "2021-03-25"}),
        ("2022-11-08", {"TWTR": None}),
        ("1980-12-11", {"AAPL": None}),
    ],
)
def test_date_is_listed_that_day(server: Served, day: str, expected: dict[str, str]) -> None:
    """ipo_date <= date and no delisting on or before it; with status=all, of either status."""
    listed = page(server, status="all", date=day)["listings"]
    ipo = {e["symbol"]: e["ipo_date"] for e in listed}
    for symbol, ipo_date in expected.items():
        assert ipo.get(symbol) == ipo_date, (day, symbol)
    target = dt.date.fromisoformat(day)
    for entry in listed:
        assert dt.date.fromisoformat(entry["ipo_date"]) <= target
        gone = entry["delisting_date"]
        assert gone is None or dt.date.fromisoformat(gone) > target


@pytest.mark.parametrize("limit", [1, 2, 7])
def test_pages_followed_to_the_end_equal_the_unpaged_answer(server: Served, limit: int) -> None:
    whole = page(server, status="all")["listings"]
    found: list[dict[str, Any]] = []
    params: dict[str, Any] = {"status": "all", "limit": limit}
    pages = 0
    while True:
        response = get(server, **params)
        body = response.json()
        assert len(body["listings"]) <= limit
        found += body["listings"]
        pages += 1
        assert response.headers.get("next-page-token") == body["next_page_token"]
        if body["next_page_token"] is None:
            break
        params["page_token"] = body["next_page_token"]
        params["format"] = "json"  # the format may change between pages
    assert found == whole
    assert pages == -(-len(whole) // limit)


def test_a_page_cut_at_the_reused_ticker_continues_with_its_second_row(server: Served) -> None:
    first = page(server, status="all", limit=2)
    assert [(e["symbol"], e["ipo_date"]) for e in first["listings"]] == [
        ("A", "1999-11-18"), ("AAC", "2014-10-02")
    ]  # fmt: skip
    second = page(server, status="all", limit=1, page_token=first["next_page_token"])
    assert [(e["symbol"], e["ipo_date"]) for e in second["listings"]] == [("AAC", "2021-03-25")]


def test_every_format_has_the_rows_of_json(server: Served) -> None:
    query = "status=all&limit=9"
    rows = page(server, status="all", limit=9)["listings"]
    url = f"{server.base}/listings?{query}"

    def same(frame: pl.DataFrame) -> None:
        as_json = [
            {k: v.isoformat() if isinstance(v, dt.date) else v for k, v in row.items()}
            for row in frame.iter_rows(named=True)
        ]
        assert as_json == rows

    parquet = requests.get(url + "&format=parquet", timeout=30)
    assert parquet.headers["content-type"] == "application/vnd.apache.parquet"
    assert parquet.headers["next-page-token"]
    typed = pq.read_table(io.BytesIO(parquet.content))
    assert typed.schema.field("ipo_date").type == pa.date32()
    assert typed.schema.field("has_bars").type == pa.bool_()
    same(pl.from_arrow(typed))  # type: ignore[arg-type]
    same(pl.read_parquet(url + "&format=parquet"))

    arrow = requests.get(url, headers={"Accept": "application/vnd.apache.arrow.stream"}, timeout=30)
    assert arrow.headers["content-type"] == "application/vnd.apache.arrow.stream"
    same(pl.from_arrow(pa.ipc.open_stream(arrow.content).read_all()))  # type: ignore[arg-type]

    csv = requests.get(url, headers={"Accept": "text/csv"}, timeout=30)
    assert csv.headers["content-type"].startswith("text/csv")
    assert csv.text.splitlines()[0] == (
        "symbol,name,exchange,asset_type,ipo_date,delisting_date,status,first_seen,"
        "last_seen,has_bars"
    )
    same(pl.read_csv(io.BytesIO(csv.content), try_parse_dates=True))
    frame = pd.read_csv(url + "&format=csv", keep_default_na=False, dtype=str)
    assert frame["symbol"].tolist() == [e["symbol"] for e in rows]
    assert frame["has_bars"].tolist() == [str(e["has_bars"]).lower() for e in rows]
    assert frame["delisting_date"].tolist() == [e["delisting_date"] or "" for e in rows]


def test_an_answer_has_an_etag_and_revalidates(server: Served) -> None:
    first = get(server, status="delisted")
    etag = first.headers["etag"]
    again = requests.get(f"{server.base}/listings?status=delisted",
                         headers={"If-None-Match": etag}, timeout=30)  # fmt: skip
    assert again.status_code == 304


BAD = [
    ("status=gone", "status"),
    ("status=Active", "status"),
    ("status=", "status"),
    ("status=all&status=active", "status"),
    ("date=2024-13-01", "date"),
    ("date=yesterday", "date"),
    ("date=20240102", "date"),
    ("date=2024-01-02&date=2024-01-03", "date"),
    ("asset_type=stock", "asset_type"),
    ("asset_type=Bond", "asset_type"),
    ("exchange=NYSE&exchange=NASDAQ", "exchange"),
    ("search=" + "A" * 101, "search"),
    ("search=a&search=b", "search"),
    ("limit=0", "limit"),
    ("limit=-1", "limit"),
    ("limit=100001", "limit"),
    ("limit=ten", "limit"),
    ("limit=1&limit=2", "limit"),
    ("page_token=abc", "page_token"),
    ("page_token=", "page_token"),
    ("format=xml", "format"),
    ("format=json&format=csv", "format"),
]


@pytest.mark.parametrize(("query", "parameter"), BAD)
def test_every_bad_parameter_is_a_400_naming_it(server: Served, query: str, parameter: str) -> None:
    assert_bad_parameter(requests.get(f"{server.base}/listings?{query}", timeout=30), parameter)


def test_a_tampered_or_foreign_page_token_is_a_400(server: Served) -> None:
    token = page(server, status="all", limit=3)["next_page_token"]
    payload, mac = token.split(".")
    tampered = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1] + "." + mac
    for params in ({"status": "all", "page_token": tampered},
                   {"status": "delisted", "page_token": token},
                   {"status": "all", "search": "a", "page_token": token}):  # fmt: skip
        response = get(server, **params)
        assert response.status_code == 400, params
        assert response.json()["parameter"] == "page_token"


def test_instruments_carry_the_listing_and_the_missing_sessions(
    server: Served, home: DataHome
) -> None:
    """Bounded by the listing's life, equal to the pipeline's ``missing_sessions`` check on
    the same file; null listing fields for a symbol without a listing."""
    body = requests.get(f"{server.base}/instruments", timeout=30).json()
    by_symbol = {e["symbol"]: e for e in body["instruments"]}
    assert list(by_symbol) == sorted(BARS)
    twtr = by_symbol["TWTR"]
    assert (twtr["name"], twtr["exchange"], twtr["asset_type"], twtr["status"],
            twtr["delisting_date"]) == ("Twitter Inc", "NYSE", "Stock", "delisted",
                                        "2022-11-08")  # fmt: skip
    assert twtr["last_date"] == "2022-11-30" and twtr["bar_count"] == len(bar_days("TWTR"))
    assert by_symbol["AAC"]["name"] == "Ares Acquisition Corporation - Class A"
    zzz = by_symbol["ZZZ"]
    assert [zzz[k] for k in ("name", "exchange", "asset_type", "status", "delisting_date")] == [
        None
    ] * 5
    assert {s: e["missing_sessions"] for s, e in by_symbol.items()} == {
        "AAPL": 1, "AAC": 0, "TWTR": 1, "ZZZ": 1
    }  # fmt: skip
    with duckdb.connect(str(home.duckdb_path), read_only=True) as conn:
        report = session_report(conn)
    checked = report.findings[MISSING_SESSIONS]
    assert {s: e["missing_sessions"] for s, e in by_symbol.items()} == {
        s: checked[s].count if s in checked else 0 for s in by_symbol
    }


def test_before_the_first_listings_load_the_answer_is_empty(tmp_path: Path) -> None:
    """Bars but no listings table yet (and no file at all): an empty list, not a 500."""
    home = DataHome(tmp_path / "home")
    home.root.mkdir()
    with serve(home, tmp_path / "empty.log") as served:
        assert page(served) == {"listings": [], "next_page_token": None}
        DuckDBFileStore(home.duckdb_path, home=home).load([bars_frame("ZZZ")])
        for _ in range(100):
            instruments = requests.get(f"{served.base}/instruments", timeout=30).json()
            if instruments["instruments"]:
                break
            time.sleep(0.1)  # the API sees the load at its next poll
        assert instruments["instruments"][0]["name"] is None
        assert page(served, status="all", format="json") == {"listings": [],
                                                             "next_page_token": None}  # fmt: skip
        assert get(served, format="csv").text.count("\n") == 1
