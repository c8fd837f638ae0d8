"""Every endpoint against the table itself, and every client mistake as a 4xx."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Hashable
from datetime import date
from pathlib import Path
from statistics import fmean
from typing import Any
from urllib.parse import quote

import duckdb
import exchange_calendars
import pytest
from litestar.testing import TestClient
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from market_api.app import create_app
from market_api.settings import Settings
from market_core import data_version
from market_core.home import DataHome
from tests.api.conftest import ApiClient, Dataset, MakeClient
from tests.api.writer import Row


def as_bar(row: Row) -> dict[str, Any]:
    _, _, open_, high, low, close, volume = row
    return {"timestamp": row[0].date().isoformat(), "open": open_, "high": high, "low": low,
            "close": close, "volume": volume}  # fmt: skip


def aggregate(rows: list[Row], bucket: Callable[[date], Hashable]) -> list[dict[str, Any]]:
    """Weekly/monthly bars by hand: first open, max high, min low, last close, summed volume."""
    groups: dict[Hashable, list[Row]] = {}
    for row in sorted(rows):
        groups.setdefault(bucket(row[0].date()), []).append(row)
    return [
        {"timestamp": group[0][0].date().isoformat(), "open": group[0][2],
         "high": max(r[3] for r in group), "low": min(r[4] for r in group),
         "close": group[-1][5], "volume": sum(r[6] for r in group)}
        for group in groups.values()
    ]  # fmt: skip


def iso_week(day: date) -> Hashable:
    return day.isocalendar()[:2]


def month(day: date) -> Hashable:
    return (day.year, day.month)


def in_range(rows: list[Row], start: date | None, end: date | None) -> list[Row]:
    return [
        r for r in rows
        if (start is None or r[0].date() >= start) and (end is None or r[0].date() <= end)
    ]  # fmt: skip


def test_health_reports_version_and_newest_bar(client: ApiClient, dataset: Dataset) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    newest = max(row[0].date() for rows in dataset.rows.values() for row in rows)
    assert response.json() == {
        "status": "ok",
        "data_version": data_version.read(dataset.home.version_path),
        "newest_bar_date": newest.isoformat(),
    }


def xnys_missing(days: list[date]) -> int:
    """Sessions of exchange_calendars' XNYS from the first to the last day without one of
    ``days``: the oracle of ``missing_sessions``."""
    sessions = exchange_calendars.get_calendar("XNYS").sessions_in_range(days[0], days[-1])
    return len({s.date() for s in sessions} - set(days))


def test_instruments_lists_every_symbol(client: ApiClient, dataset: Dataset) -> None:
    """Without a listings table the listing fields are null; the missing sessions count from
    the first to the last bar (AAPL's two-week gap: 9 sessions)."""
    response = client.get("/instruments")
    assert response.status_code == 200
    expected = [
        {"symbol": symbol, "first_date": rows[0][0].date().isoformat(),
         "last_date": rows[-1][0].date().isoformat(), "bar_count": len(rows),
         "name": None, "exchange": None, "asset_type": None, "status": None,
         "delisting_date": None, "missing_sessions": xnys_missing(dataset.dates(symbol))}
        for symbol, rows in sorted(dataset.rows.items())
    ]  # fmt: skip
    assert response.json() == {"instruments": expected}
    assert expected[0]["symbol"] == "AAPL" and expected[0]["missing_sessions"] == 9


def test_daily_bars_equal_the_table(client: ApiClient, dataset: Dataset) -> None:
    response = client.get("/instruments/MSFT/ohlcv")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "symbol": "MSFT",
        "interval": "1d",
        "adjustment": "raw",
        "bars": [as_bar(row) for row in dataset.rows["MSFT"]],
    }


def test_symbol_is_case_insensitive_in_and_upper_case_out(
    client: ApiClient, dataset: Dataset
) -> None:
    lower = client.get("/instruments/brk.b/ohlcv").json()
    upper = client.get("/instruments/BRK.B/ohlcv").json()
    assert lower == upper
    assert lower["symbol"] == "BRK.B"
    assert len(lower["bars"]) == len(dataset.rows["BRK.B"])
    assert client.get("/instruments/brk.b/stats").json()["symbol"] == "BRK.B"


def test_start_and_end_are_inclusive(client: ApiClient, dataset: Dataset) -> None:
    dates = dataset.dates("AAPL")
    start, end = dates[10], dates[30]
    bars = client.get(f"/instruments/AAPL/ohlcv?start={start}&end={end}").json()["bars"]
    assert [b["timestamp"] for b in bars] == [d.isoformat() for d in dates[10:31]]
    only_start = client.get(f"/instruments/AAPL/ohlcv?start={start}").json()["bars"]
    assert [b["timestamp"] for b in only_start] == [d.isoformat() for d in dates[10:]]
    only_end = client.get(f"/instruments/AAPL/ohlcv?end={end}").json()["bars"]
    assert [b["timestamp"] for b in only_end] == [d.isoformat() for d in dates[:31]]


def test_known_symbol_with_no_bars_in_range_is_empty_not_404(
    client: ApiClient,
) -> None:
    response = client.get("/instruments/AAPL/ohlcv?start=2024-02-12&end=2024-02-23")
    assert response.status_code == 200
    assert response.json()["bars"] == []
    stats = client.get("/instruments/AAPL/stats?start=2024-02-12&end=2024-02-23")
    assert stats.status_code == 200
    assert stats.json()["count"] == 0
    assert stats.json()["total_return"] is None


@pytest.mark.parametrize(("interval", "bucket"), [("1w", iso_week), ("1mo", month)])
def test_weekly_and_monthly_bars_match_a_hand_computation(
    client: ApiClient,
    dataset: Dataset,
    interval: str,
    bucket: Callable[[date], Hashable],
) -> None:
    body = client.get(f"/instruments/AAPL/ohlcv?interval={interval}").json()
    assert body["interval"] == interval
    assert body["bars"] == aggregate(dataset.rows["AAPL"], bucket)
    # The two-week gap leaves whole ISO weeks out, and a holiday Monday dates its week Tuesday.
    timestamps = [bar["timestamp"] for bar in body["bars"]]
    if interval == "1w":
        assert "2024-02-12" not in timestamps and "2024-02-19" not in timestamps
        assert "2024-01-16" in timestamps


@pytest.mark.parametrize(("interval", "bucket"), [("1w", iso_week), ("1mo", month)])
def test_aggregation_uses_only_days_inside_the_range(
    client: ApiClient,
    dataset: Dataset,
    interval: str,
    bucket: Callable[[date], Hashable],
) -> None:
    start, end = date(2024, 1, 10), date(2024, 3, 13)  # both mid-week and mid-month
    url = f"/instruments/AAPL/ohlcv?interval={interval}&start={start}&end={end}"
    bars = client.get(url).json()["bars"]
    assert bars == aggregate(in_range(dataset.rows["AAPL"], start, end), bucket)
    assert bars[0]["timestamp"] == "2024-01-10"


@pytest.mark.parametrize("interval", ["1d", "1w", "1mo"])
def test_limit_keeps_the_newest_bars_ascending(client: ApiClient, interval: str) -> None:
    full = client.get(f"/instruments/AAPL/ohlcv?interval={interval}").json()["bars"]
    limited = client.get(f"/instruments/AAPL/ohlcv?interval={interval}&limit=3").json()["bars"]
    assert limited == full[-3:]
    assert (
        client.get(f"/instruments/AAPL/ohlcv?limit=100000&interval={interval}").json()["bars"]
        == full
    )


def test_stats_match_a_hand_computation(client: ApiClient, dataset: Dataset) -> None:
    start, end = date(2023, 12, 1), date(2024, 3, 31)
    rows = in_range(dataset.rows["AAPL"], start, end)
    body = client.get(f"/instruments/aapl/stats?start={start}&end={end}").json()
    assert body == {
        "symbol": "AAPL",
        "start": start.isoformat(),
        "end": end.isoformat(),
        "adjustment": "raw",
        "count": len(rows),
        "first_date": rows[0][0].date().isoformat(),
        "last_date": rows[-1][0].date().isoformat(),
        "average_close": pytest.approx(fmean(r[5] for r in rows), rel=1e-12),
        "min_low": min(r[4] for r in rows),
        "max_high": max(r[3] for r in rows),
        "total_return": pytest.approx(rows[-1][5] / rows[0][5] - 1, rel=1e-12),
    }
    whole = client.get("/instruments/MSFT/stats").json()
    assert (whole["start"], whole["end"], whole["count"]) == (None, None, len(dataset.rows["MSFT"]))


def test_csv_has_the_same_columns_and_values(client: ApiClient) -> None:
    url = "/instruments/AAPL/ohlcv?interval=1w&limit=5"
    as_json = client.get(url).json()["bars"]
    response = client.get(url, headers={"Accept": "text/csv"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(response.text)))
    assert list(table[0]) == ["timestamp", "open", "high", "low", "close", "volume"]
    assert [
        {"timestamp": r["timestamp"], "open": float(r["open"]), "high": float(r["high"]),
         "low": float(r["low"]), "close": float(r["close"]), "volume": int(r["volume"])}
        for r in table
    ] == as_json  # fmt: skip


@pytest.mark.parametrize(
    ("accept", "media"),
    [
        ("text/csv", "text/csv"),
        ("text/csv;q=0.9, application/json;q=0.5", "text/csv"),
        ("text/csv;q=0.5, application/json", "application/json"),
        ("application/json", "application/json"),
        ("*/*", "application/json"),
        ("text/html", "application/json"),
    ],
)
def test_accept_header_picks_the_format(client: ApiClient, accept: str, media: str) -> None:
    for _ in range(2):  # the miss, then the cached answer
        response = client.get("/instruments/MSFT/ohlcv?limit=2", headers={"Accept": accept})
        assert response.status_code == 200
        assert response.headers["content-type"].startswith(media)


def test_unknown_symbol_is_404(client: ApiClient) -> None:
    for url in ("/instruments/ZZZZ/ohlcv", "/instruments/zzzz/stats",
                "/instruments/ZZZZ/ohlcv?interval=1mo&start=2024-01-01"):  # fmt: skip
        response = client.get(url)
        assert response.status_code == 404
        assert response.json()["error"] == "unknown_symbol"
        assert "ZZZZ" in response.json()["detail"]


@pytest.mark.parametrize(
    ("url", "parameter"),
    [
        ("/instruments/AA$PL/ohlcv", "symbol"),
        ("/instruments/-AAPL/stats", "symbol"),
        ("/instruments/ABCDEFGHIJKLM/ohlcv", "symbol"),
        ("/instruments/%C4%B1bm/ohlcv", "symbol"),  # dotless i: upper() would make it IBM
        ("/instruments/ma%C3%9F/stats", "symbol"),  # sharp s: upper() would make it MASS
        ("/instruments/AAPL/ohlcv?start=2024-13-01", "start"),
        ("/instruments/AAPL/ohlcv?start=yesterday", "start"),
        ("/instruments/AAPL/ohlcv?end=2024-02-30", "end"),
        ("/instruments/AAPL/stats?end=20240101", "end"),
        ("/instruments/AAPL/ohlcv?start=2024-03-01&end=2024-02-01", "start"),
        ("/instruments/AAPL/stats?start=2024-03-01&end=2024-02-01", "start"),
        ("/instruments/AAPL/ohlcv?limit=0", "limit"),
        ("/instruments/AAPL/ohlcv?limit=100001", "limit"),
        ("/instruments/AAPL/ohlcv?limit=-5", "limit"),
        ("/instruments/AAPL/ohlcv?limit=ten", "limit"),
        ("/instruments/AAPL/ohlcv?interval=1h", "interval"),
        ("/instruments/AAPL/ohlcv?interval=1W", "interval"),
    ],
)
def test_bad_parameters_are_400_naming_the_parameter(
    client: ApiClient, url: str, parameter: str
) -> None:
    response = client.get(url)
    assert response.status_code == 400
    body = response.json()
    assert body["parameter"] == parameter
    assert body["error"] == "invalid_parameter"
    assert body["detail"]


INJECTIONS = [
    "AAPL'; DROP TABLE ohlcv_data; --",
    "' OR '1'='1",
    'AAPL" OR 1=1 --',
    "AAPL; DELETE FROM ohlcv_data",
    "../../etc/passwd",
    "AAPL%00",
    "$symbol",
    "?",
    "ÄPL",
    "A" * 5000,
    "AAPL\r\nX-Injected: 1",
]


@pytest.mark.parametrize("symbol", INJECTIONS)
def test_injection_in_symbol_is_4xx(client: ApiClient, symbol: str) -> None:
    for endpoint in ("ohlcv", "stats"):
        response = client.get(f"/instruments/{quote(symbol, safe='')}/{endpoint}")
        assert 400 <= response.status_code < 500


@pytest.mark.parametrize(
    "query",
    [
        "start=2024-01-01' OR 1=1 --",
        "end='; DELETE FROM ohlcv_data; --",
        "limit=1; DROP TABLE ohlcv_data",
        "interval=1d' --",
        "interval=week",
        "limit=99999999999999999999999",
        "start=0000-00-00",
    ],
)
def test_injection_in_query_is_4xx(client: ApiClient, dataset: Dataset, query: str) -> None:
    name, _, value = query.partition("=")
    response = client.get(f"/instruments/AAPL/ohlcv?{name}={quote(value, safe='')}")
    assert response.status_code == 400
    assert response.json()["parameter"] == name
    # The table is intact: an uncached question still sees every bar.
    stats = client.get(f"/instruments/AAPL/stats?end={dataset.dates('AAPL')[-1]}").json()
    assert stats["count"] == len(dataset.rows["AAPL"])


def test_unknown_route_is_a_json_404(client: ApiClient) -> None:
    response = client.get("/instrument")
    assert response.status_code == 404
    assert response.json()["status_code"] == 404


@pytest.mark.parametrize("state", ["no file", "no table"])
def test_before_the_first_load_nothing_fails(
    tmp_path: Path, make_client: MakeClient, state: str
) -> None:
    home = DataHome(tmp_path / "empty")
    home.root.mkdir()
    if state == "no table":
        duckdb.connect(str(home.duckdb_path)).close()
    client = make_client(home)
    health = client.get("/health")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "data_version": None, "newest_bar_date": None}
    assert client.get("/instruments").json() == {"instruments": []}
    assert client.get("/instruments/AAPL/ohlcv").status_code == 404
    assert client.get("/instruments/AAPL/stats").status_code == 404
    assert client.get("/instruments/AAPL/ohlcv?limit=0").status_code == 400
    assert not home.duckdb_path.exists() or state == "no table"  # the API never creates it


def test_openapi_describes_the_contract(client: ApiClient) -> None:
    schema = client.get("/schema/openapi.json").json()
    assert {"/health", "/instruments", "/instruments/{symbol}/ohlcv",
            "/instruments/{symbol}/stats"} <= set(schema["paths"])  # fmt: skip
    ohlcv = schema["paths"]["/instruments/{symbol}/ohlcv"]["get"]
    assert {p["name"] for p in ohlcv["parameters"]} == {"symbol", "start", "end", "interval",
                                                        "limit", "adjustment", "as_of",
                                                        "format"}  # fmt: skip
    content = ohlcv["responses"]["200"]["content"]
    assert content["application/json"]["schema"]["$ref"].endswith("/OhlcvSeries")
    assert "text/csv" in content
    assert {"400", "404", "503"} <= set(ohlcv["responses"])
    bar = schema["components"]["schemas"]["Bar"]
    assert list(bar["properties"]) == ["timestamp", "open", "high", "low", "close", "volume"]
    assert schema["components"]["schemas"]["Interval"]["enum"] == ["1d", "1w", "1mo", "1min",
                                                                   "5min", "15min", "30min",
                                                                   "60min"]  # fmt: skip
    bars = schema["paths"]["/bars"]["get"]["responses"]["200"]
    assert {"ETag", "Next-Page-Token", "Missing-Symbols"} <= set(bars["headers"])
    assert {"text/csv", "application/vnd.apache.parquet"} <= set(bars["content"])
    assert set(schema["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    # auth off (the default on loopback): no route asks for a key
    assert not any("security" in ops["get"] for ops in schema["paths"].values())


SYMBOL_CANDIDATES = ["A", "a", "aapl", "BRK.B", "brk-b", "9", "ABCDEFGHIJKL", "ABCDEFGHIJKLM",
                     "A" * 64, ".A", "-A", "A$", "A B", "AA_PL", "\u00c4PL", "\u0131bm", "A..",
                     "Z-9.Q"]  # fmt: skip


@pytest.mark.parametrize("endpoint", ["ohlcv", "stats"])
def test_the_schema_accepts_exactly_the_symbols_the_api_accepts(
    client: ApiClient, endpoint: str
) -> None:
    """What the schema allows is never a 400, what it forbids always is: schemathesis'
    ``positive_data_acceptance`` and ``negative_data_rejection`` rely on this."""
    schema = client.get("/schema/openapi.json").json()
    operation = schema["paths"][f"/instruments/{{symbol}}/{endpoint}"]["get"]
    rule = next(p for p in operation["parameters"] if p["name"] == "symbol")["schema"]
    for symbol in SYMBOL_CANDIDATES:
        allowed = (rule["minLength"] <= len(symbol) <= rule["maxLength"]
                   and re.search(rule["pattern"], symbol) is not None)  # fmt: skip
        status = client.get(f"/instruments/{quote(symbol, safe='')}/{endpoint}").status_code
        assert (status != 400) == allowed, f"{symbol!r}: schema allows={allowed}, API {status}"
        assert status in ((200, 404) if allowed else (400,)), f"{symbol!r}: {status}"


class Recorder:
    """Wraps the served ASGI app and keeps every message it sends (the wire, in-process)."""

    def __init__(self, app: ASGIApp) -> None:
        self._inner = app
        self.sent: list[Message] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def record(message: Message) -> None:
            self.sent.append(message)
            await send(message)

        await self._inner(scope, receive, record)

    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")


HEAD_URLS = ["/health", "/instruments", "/instruments/AAPL/ohlcv?limit=3",
             "/instruments/aapl/stats?start=2024-01-02", "/instruments/ZZZZ/stats",
             "/instruments/AA$PL/ohlcv", "/instruments/AAPL/ohlcv?limit=0", "/nowhere"]  # fmt: skip


def test_head_answers_as_get_does_without_a_body(dataset: Dataset) -> None:
    """First on a miss (Litestar answers), then on a hit (the fast path): same status and
    headers as the GET, Content-Length included, and not one body byte sent."""
    recorder = Recorder(create_app(Settings(home=dataset.home)))
    with TestClient(recorder) as client:
        for url in HEAD_URLS:
            for attempt in ("miss", "hit"):
                recorder.sent.clear()
                head = client.head(url)
                assert recorder.sent and recorder.body() == b"", f"{attempt} {url}"
                get = client.get(url)
                where = f"{attempt} {url}: HEAD {head.status_code}, GET {get.status_code}"
                assert head.status_code == get.status_code != 405, where
                assert dict(head.headers) == dict(get.headers), where
                assert int(head.headers["content-length"]) == len(get.content), where
        etag = client.get(HEAD_URLS[2]).headers["etag"]
        assert client.head(HEAD_URLS[2], headers={"If-None-Match": etag}).status_code == 304


def test_allow_lists_head_beside_get(client: ApiClient) -> None:
    for response in (client.delete("/instruments"), client.post("/instruments/AAPL/stats"),
                     client.options("/health")):  # fmt: skip
        methods = {m.strip() for m in response.headers["allow"].split(",")}
        assert {"GET", "HEAD"} <= methods, response.headers["allow"]
    assert client.delete("/instruments").status_code == 405
