"""Adjusted prices, stats and aggregates, and the corporate-actions endpoint.

The data home holds a short history of ``ADJ`` with every awkward event around it: splits
before the first bar and after the last, a reverse split, a dividend on the first bar and one
before it (neither adjusts anything: no close before them), a dividend worth 60 % of the price
(a spin-off reported as cash), one on a Saturday, and events after the last bar (they adjust
everything). ``expected`` applies the formula as the README states it, in plain Python, and a
few values are also written out by hand. Events are written the way the pipeline's loader
writes them: under the write lock, then a new data version.
"""

from __future__ import annotations

import csv
import io
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from math import prod
from pathlib import Path
from typing import Any

import duckdb
import pytest

from market_core.handoff import exclusive_write
from market_core.home import DataHome
from market_core.schema import ACTIONS_TABLE, CREATE_ACTIONS_SQL
from tests.api.conftest import ApiClient, Dataset, MakeClient, service_of
from tests.api.test_endpoints import aggregate, iso_week, month
from tests.api.test_handoff import wait_for
from tests.api.writer import Row, connect_with_backoff, load


@dataclass(frozen=True)
class Event:
    symbol: str
    ex_date: date
    kind: str
    split_factor: float | None = None
    amount: float | None = None
    declaration_date: date | None = None
    record_date: date | None = None
    payment_date: date | None = None


def split(symbol: str, ex_date: date, factor: float) -> Event:
    return Event(symbol, ex_date, "split", split_factor=factor)


def dividend(
    symbol: str,
    ex_date: date,
    amount: float,
    declared: date | None = None,
    recorded: date | None = None,
    paid: date | None = None,
) -> Event:
    return Event(symbol, ex_date, "dividend", None, amount, declared, recorded, paid)


UPSERT_ACTIONS_SQL = f"""
INSERT INTO {ACTIONS_TABLE} VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (symbol, ex_date, kind) DO UPDATE SET
    split_factor = excluded.split_factor, amount = excluded.amount,
    declaration_date = excluded.declaration_date, record_date = excluded.record_date,
    payment_date = excluded.payment_date
"""


def load_actions(home: DataHome, events: Iterable[Event], delete: Iterable[Event] = ()) -> None:
    """The loader's side (``DuckDBFileStore.load_actions``): write lock, upsert and delete in one
    transaction, close, then record the new data version."""
    with exclusive_write(home) as handoff:
        conn, _ = connect_with_backoff(home.duckdb_path)
        try:
            conn.execute(CREATE_ACTIONS_SQL)
            conn.begin()
            for gone in delete:
                conn.execute(
                    f"DELETE FROM {ACTIONS_TABLE} WHERE symbol = ? AND ex_date = ? AND kind = ?",
                    [gone.symbol, gone.ex_date, gone.kind],
                )
            rows = [list(vars(e).values()) for e in events]
            if rows:
                conn.executemany(UPSERT_ACTIONS_SQL, rows)
            conn.commit()
        finally:
            conn.close()
        handoff.finish(changed=True)


def weekdays(first: date, last: date) -> list[date]:
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    return [d for d in days if d.weekday() < 5]


DAYS = weekdays(date(2024, 1, 2), date(2024, 2, 9))


def adj_rows(symbol: str = "ADJ", base: float = 100.0) -> list[Row]:
    """Close ``base + i`` on the i-th day; odd volumes, so volume * 2.5 ends in .5."""
    return [
        (datetime.combine(d, datetime.min.time()), symbol, base + i - 0.5, base + i + 2.0,
         base + i - 2.0, base + i, 1001 + 2 * i)
        for i, d in enumerate(DAYS)
    ]  # fmt: skip


def close_on(day: date) -> float:
    return 100.0 + DAYS.index(day)


DECLARED = date(2023, 12, 20)
BIG = 0.6 * close_on(date(2024, 1, 11))
"""More than half the price: what a spin-off reported as a cash dividend looks like."""

EVENTS = [
    split("ADJ", date(2023, 12, 1), 10.0),  # before the first bar: adjusts nothing
    dividend("ADJ", date(2023, 12, 15), 0.5),  # before the first bar: no close before it
    dividend("ADJ", date(2024, 1, 2), 0.5),  # on the first bar: no close before it
    split("ADJ", date(2024, 1, 5), 2.0),
    dividend(
        "ADJ", date(2024, 1, 9), 0.8, date(2023, 12, 20), date(2024, 1, 10), date(2024, 1, 25)
    ),
    split("ADJ", date(2024, 1, 10), 0.5),  # a reverse split, 1 for 2
    dividend("ADJ", date(2024, 1, 12), BIG),
    dividend("ADJ", date(2024, 1, 20), 0.3),  # a Saturday: the close before is Friday's
    split("ADJ", date(2024, 1, 22), 1.5),
    split("ADJ", date(2024, 3, 1), 2.5),  # after the last bar: adjusts every bar
    dividend("ADJ", date(2024, 3, 4), 1.0),  # after the last bar: the last close is its own
    split("OTHER", date(2024, 1, 16), 7.0),  # another symbol's events never leak
    dividend("OTHER", date(2024, 1, 16), 50.0),
    split("EVONLY", date(2020, 6, 1), 4.0),  # events but no bars
]


def expected(rows: Sequence[Row], events: Sequence[Event], adjustment: str) -> list[Row]:
    """The formula, bar by bar: S(t) and D(t) over every event with ex-date > t."""
    history = sorted(rows)
    mine = [e for e in events if e.symbol == history[0][1]]
    splits = [e for e in mine if e.kind == "split"]
    factors = []
    for e in (e for e in mine if e.kind == "dividend"):
        before = [r for r in history if r[0].date() < e.ex_date]
        if before:
            assert e.amount is not None
            factors.append((e.ex_date, 1 - e.amount / before[-1][5]))
    out: list[Row] = []
    for ts, symbol, o, h, low, c, v in history:
        t = ts.date()
        s = prod(e.split_factor or 1.0 for e in splits if e.ex_date > t)
        d = prod(f for ex, f in factors if ex > t)
        s_used = s if adjustment in ("split", "all") else 1.0
        d_used = d if adjustment in ("dividend", "all") else 1.0
        prices = [p / s_used * d_used for p in (o, h, low, c)]
        volume = round(v * s_used)  # round half to even, as the API does
        out.append((ts, symbol, prices[0], prices[1], prices[2], prices[3], volume))
    return out


def as_bars(rows: Iterable[Row]) -> list[dict[str, Any]]:
    return [
        {"timestamp": r[0].date().isoformat(), "open": r[2], "high": r[3], "low": r[4],
         "close": r[5], "volume": r[6]}
        for r in rows
    ]  # fmt: skip


def approx_bars(bars: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: pytest.approx(v, rel=1e-12) if isinstance(v, float) else v
             for k, v in bar.items()} for bar in bars]  # fmt: skip


@pytest.fixture(scope="module")
def adj_template(tmp_path_factory: pytest.TempPathFactory) -> DataHome:
    home = DataHome(tmp_path_factory.mktemp("adjust") / "home")
    load(home, adj_rows() + adj_rows("OTHER", 300.0) + adj_rows("PLAIN", 50.0))
    load_actions(home, EVENTS)
    return home


@pytest.fixture
def adj_home(adj_template: DataHome, tmp_path: Path) -> DataHome:
    home = DataHome(tmp_path / "home")
    home.root.mkdir()
    for path in (adj_template.duckdb_path, adj_template.version_path):
        shutil.copy2(path, home.root / path.name)
    return home


@pytest.fixture
def adj(adj_home: DataHome, make_client: MakeClient) -> ApiClient:
    return make_client(adj_home)


ADJUSTMENTS = ["raw", "split", "dividend", "all"]


@pytest.mark.parametrize("adjustment", ADJUSTMENTS)
def test_daily_bars_follow_the_formula(adj: ApiClient, adjustment: str) -> None:
    body = adj.get(f"/instruments/ADJ/ohlcv?adjustment={adjustment}").json()
    assert body["symbol"] == "ADJ"
    assert body["adjustment"] == adjustment
    assert body["bars"] == approx_bars(as_bars(expected(adj_rows(), EVENTS, adjustment)))


def test_a_few_values_by_hand(adj: ApiClient) -> None:
    bars = {
        b["timestamp"]: b for b in adj.get("/instruments/ADJ/ohlcv?adjustment=all").json()["bars"]
    }
    # 2024-01-02 (close 100): later splits 2, 0.5, 1.5, 2.5 -> S = 3.75; later dividends with a
    # close before them: 0.8 on 01-09 (close 01-08 = 104), BIG = 64.2 on 01-12 (close 01-11 =
    # 107), 0.3 on 01-20 (close 01-19 = 113), 1.0 on 03-04 (close 02-09 = 128).
    d = (1 - 0.8 / 104) * (1 - 64.2 / 107) * (1 - 0.3 / 113) * (1 - 1.0 / 128)
    first = bars["2024-01-02"]
    assert first["close"] == pytest.approx(100 / 3.75 * d, rel=1e-12)
    assert first["volume"] == round(1001 * 3.75)  # 3753.75 -> 3754
    # 2024-01-10 (close 106): after the reverse split, S = 1.5 * 2.5; BIG still ahead.
    mid = bars["2024-01-10"]
    d_mid = (1 - 64.2 / 107) * (1 - 0.3 / 113) * (1 - 1.0 / 128)
    assert mid["close"] == pytest.approx(106 / 3.75 * d_mid, rel=1e-12)
    # 2024-01-22 (close 114, volume 1029): only the events after the last bar.
    late = bars["2024-01-22"]
    assert late["close"] == pytest.approx(114 / 2.5 * (1 - 1.0 / 128), rel=1e-12)
    assert late["volume"] == 2572  # 1029 * 2.5 = 2572.5: half to even
    assert bars["2024-01-23"]["volume"] == 2578  # 1031 * 2.5 = 2577.5: half to even
    split_only = adj.get("/instruments/ADJ/ohlcv?adjustment=split&limit=1").json()["bars"]
    assert split_only == [{"timestamp": "2024-02-09", "open": 127.5 / 2.5, "high": 130 / 2.5,
                           "low": 126 / 2.5, "close": 128 / 2.5,
                           "volume": 2642}]  # 1057 * 2.5 = 2642.5  # fmt: skip


def test_the_dividend_factor_ignores_the_asked_range(adj: ApiClient) -> None:
    """The close before the 01-09 dividend is 01-08's, outside [01-02, 01-05]: still used."""
    url = "/instruments/ADJ/ohlcv?adjustment=dividend&start=2024-01-02&end=2024-01-05"
    bars = adj.get(url).json()["bars"]
    full = as_bars(expected(adj_rows(), EVENTS, "dividend"))
    assert bars == approx_bars(full[:4])
    limited = adj.get("/instruments/ADJ/ohlcv?adjustment=all&limit=3").json()["bars"]
    assert limited == approx_bars(as_bars(expected(adj_rows(), EVENTS, "all"))[-3:])


def test_events_of_other_symbols_and_symbols_without_events(adj: ApiClient) -> None:
    other = adj.get("/instruments/OTHER/ohlcv?adjustment=all").json()["bars"]
    assert other == approx_bars(as_bars(expected(adj_rows("OTHER", 300.0), EVENTS[11:13], "all")))
    plain_raw = adj.get("/instruments/PLAIN/ohlcv").json()
    plain_all = adj.get("/instruments/PLAIN/ohlcv?adjustment=all").json()
    assert plain_all["bars"] == plain_raw["bars"] == as_bars(adj_rows("PLAIN", 50.0))
    assert (plain_raw["adjustment"], plain_all["adjustment"]) == ("raw", "all")


@pytest.mark.parametrize("adjustment", ADJUSTMENTS)
@pytest.mark.parametrize(("interval", "bucket"), [("1w", iso_week), ("1mo", month)])
def test_weekly_and_monthly_bars_are_built_from_adjusted_days(
    adj: ApiClient, adjustment: str, interval: str, bucket: Any
) -> None:
    url = f"/instruments/ADJ/ohlcv?interval={interval}&adjustment={adjustment}"
    body = adj.get(url).json()
    assert body["interval"] == interval and body["adjustment"] == adjustment
    assert body["bars"] == approx_bars(aggregate(expected(adj_rows(), EVENTS, adjustment), bucket))
    ranged = adj.get(f"{url}&start=2024-01-08&end=2024-01-24").json()["bars"]
    inside = [r for r in expected(adj_rows(), EVENTS, adjustment)
              if date(2024, 1, 8) <= r[0].date() <= date(2024, 1, 24)]  # fmt: skip
    assert ranged == approx_bars(aggregate(inside, bucket))


@pytest.mark.parametrize("adjustment", ["split", "dividend", "all"])
def test_daily_bars_are_bit_identical_to_the_days_buckets_are_built_from(
    adj: ApiClient, adjustment: str
) -> None:
    """Daily bars are adjusted in Python, buckets and stats in SQL: a one-day week must be
    exactly (not approximately) that day's bar, and a one-day total return zero."""
    daily = adj.get(f"/instruments/ADJ/ohlcv?adjustment={adjustment}").json()["bars"]
    for bar in daily:
        day = bar["timestamp"]
        one_day = f"interval=1w&start={day}&end={day}&adjustment={adjustment}"
        assert adj.get(f"/instruments/ADJ/ohlcv?{one_day}").json()["bars"] == [bar]
        stats = adj.get(f"/instruments/ADJ/stats?start={day}&end={day}&adjustment={adjustment}")
        assert stats.json()["min_low"] == bar["low"] and stats.json()["max_high"] == bar["high"]


@pytest.mark.parametrize("adjustment", ADJUSTMENTS)
def test_stats_come_from_the_adjusted_bars(adj: ApiClient, adjustment: str) -> None:
    start, end = date(2024, 1, 3), date(2024, 2, 1)
    rows = [r for r in expected(adj_rows(), EVENTS, adjustment) if start <= r[0].date() <= end]
    body = adj.get(f"/instruments/ADJ/stats?start={start}&end={end}&adjustment={adjustment}")
    assert body.json() == {
        "symbol": "ADJ",
        "start": start.isoformat(),
        "end": end.isoformat(),
        "adjustment": adjustment,
        "count": len(rows),
        "first_date": "2024-01-03",
        "last_date": "2024-02-01",
        "average_close": pytest.approx(sum(r[5] for r in rows) / len(rows), rel=1e-12),
        "min_low": pytest.approx(min(r[4] for r in rows), rel=1e-12),
        "max_high": pytest.approx(max(r[3] for r in rows), rel=1e-12),
        "total_return": pytest.approx(rows[-1][5] / rows[0][5] - 1, rel=1e-12),
    }


def test_total_return_across_splits_and_dividends_by_hand(adj: ApiClient) -> None:
    """01-03 (close 101) to 02-09 (close 128): splits 2, 0.5, 1.5 lie between (S 1.5 -> 1);
    dividends 0.8, BIG, 0.3 lie between, reinvested."""
    url = "/instruments/ADJ/stats?start=2024-01-03"
    raw = adj.get(url).json()["total_return"]
    split_return = adj.get(f"{url}&adjustment=split").json()["total_return"]
    total = adj.get(f"{url}&adjustment=all").json()["total_return"]
    assert raw == pytest.approx(128 / 101 - 1, rel=1e-12)
    assert split_return == pytest.approx(128 / (101 / 1.5) - 1, rel=1e-12)
    between = (1 - 0.8 / 104) * (1 - 64.2 / 107) * (1 - 0.3 / 113)
    assert total == pytest.approx(128 / (101 / 1.5 * between) - 1, rel=1e-12)


def test_the_default_is_raw_and_unchanged_but_for_the_key(adj: ApiClient) -> None:
    plain = adj.get("/instruments/ADJ/ohlcv")
    raw = adj.get("/instruments/ADJ/ohlcv?adjustment=raw")
    assert plain.content == raw.content
    assert plain.headers["etag"] == raw.headers["etag"]
    assert plain.json() == {"symbol": "ADJ", "interval": "1d", "adjustment": "raw",
                            "bars": as_bars(adj_rows())}  # fmt: skip
    csv_plain = adj.get("/instruments/ADJ/ohlcv", headers={"Accept": "text/csv"})
    csv_raw = adj.get("/instruments/ADJ/ohlcv?adjustment=raw", headers={"Accept": "text/csv"})
    assert csv_plain.content == csv_raw.content
    assert csv_plain.text.splitlines()[0] == "timestamp,open,high,low,close,volume"
    assert len(service_of(adj).cache) == 4  # two spellings x two formats, each its own entry


@pytest.mark.parametrize(
    "query",
    ["adjustment=bogus", "adjustment=ALL", "adjustment=", "adjustment=raw&adjustment=raw",
     "adjustment=raw&adjustment=all", "adjustment=all&adjustment=split",
     "adjustment=all%27%20OR%201%3D1"],
)  # fmt: skip
@pytest.mark.parametrize("endpoint", ["ohlcv", "stats"])
def test_a_bad_or_repeated_adjustment_is_400_naming_it(
    adj: ApiClient, query: str, endpoint: str
) -> None:
    for _ in range(2):  # and never cached
        response = adj.get(f"/instruments/ADJ/{endpoint}?{query}")
        assert response.status_code == 400, query
        body = response.json()
        assert set(body) == {"status_code", "error", "detail", "parameter"}
        assert body["parameter"] == "adjustment"
        assert body["error"] == "invalid_parameter"
    assert len(service_of(adj).cache) == 0


@pytest.mark.parametrize("adjustment", ADJUSTMENTS)
def test_csv_head_and_304_per_adjustment(adj: ApiClient, adjustment: str) -> None:
    url = f"/instruments/ADJ/ohlcv?interval=1w&adjustment={adjustment}"
    as_json = adj.get(url).json()["bars"]
    response = adj.get(url, headers={"Accept": "text/csv"})
    assert response.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(response.text)))
    assert [{k: (v if k == "timestamp" else int(v) if k == "volume" else float(v))
             for k, v in row.items()} for row in table] == as_json  # fmt: skip
    for accept in ("application/json", "text/csv"):
        get = adj.get(url, headers={"Accept": accept})
        head = adj.head(url, headers={"Accept": accept})
        assert head.status_code == 200 and head.content == b""
        assert dict(head.headers) == dict(get.headers)
        etag = get.headers["etag"]
        assert adj.get(url, headers={"Accept": accept, "If-None-Match": etag}).status_code == 304
        assert adj.head(url, headers={"Accept": accept, "If-None-Match": etag}).status_code == 304


def test_etags_differ_between_adjustments(adj: ApiClient) -> None:
    tags = {adj.get(f"/instruments/ADJ/ohlcv?adjustment={a}").headers["etag"] for a in ADJUSTMENTS}
    assert len(tags) == 4
    raw_tag = adj.get("/instruments/ADJ/ohlcv").headers["etag"]
    stale = adj.get("/instruments/ADJ/ohlcv?adjustment=all", headers={"If-None-Match": raw_tag})
    assert stale.status_code == 200


def test_corporate_actions_lists_the_events_ascending(adj: ApiClient) -> None:
    body = adj.get("/instruments/adj/corporate-actions").json()
    assert body == {
        "symbol": "ADJ",
        "splits": [
            {"ex_date": e.ex_date.isoformat(), "split_factor": e.split_factor}
            for e in EVENTS[:11] if e.kind == "split"
        ],
        "dividends": [
            {"ex_date": e.ex_date.isoformat(), "amount": e.amount,
             "declaration_date": e.declaration_date and e.declaration_date.isoformat(),
             "record_date": e.record_date and e.record_date.isoformat(),
             "payment_date": e.payment_date and e.payment_date.isoformat()}
            for e in EVENTS[:11] if e.kind == "dividend"
        ],
    }  # fmt: skip
    assert [s["ex_date"] for s in body["splits"]] == sorted(s["ex_date"] for s in body["splits"])
    assert body["dividends"][2]["record_date"] == "2024-01-10"
    assert body["dividends"][0]["payment_date"] is None


def test_corporate_actions_start_and_end_are_inclusive(adj: ApiClient) -> None:
    body = adj.get("/instruments/ADJ/corporate-actions?start=2024-01-05&end=2024-01-12").json()
    assert [s["ex_date"] for s in body["splits"]] == ["2024-01-05", "2024-01-10"]
    assert [d["ex_date"] for d in body["dividends"]] == ["2024-01-09", "2024-01-12"]
    none = adj.get("/instruments/ADJ/corporate-actions?start=2025-01-01").json()
    assert none == {"symbol": "ADJ", "splits": [], "dividends": []}


def test_corporate_actions_404_and_400(adj: ApiClient) -> None:
    unknown = adj.get("/instruments/ZZZZ/corporate-actions")
    assert unknown.status_code == 404
    assert unknown.json()["error"] == "unknown_symbol" and "ZZZZ" in unknown.json()["detail"]
    events_only = adj.get("/instruments/EVONLY/corporate-actions").json()
    assert events_only["splits"] == [{"ex_date": "2020-06-01", "split_factor": 4.0}]
    assert adj.get("/instruments/PLAIN/corporate-actions").json() == {
        "symbol": "PLAIN", "splits": [], "dividends": []}  # fmt: skip
    for url, parameter in [
        ("/instruments/AA$PL/corporate-actions", "symbol"),
        ("/instruments/%C4%B1bm/corporate-actions", "symbol"),
        ("/instruments/ADJ/corporate-actions?start=2024-13-01", "start"),
        ("/instruments/ADJ/corporate-actions?end=yesterday", "end"),
        ("/instruments/ADJ/corporate-actions?start=2024-03-01&end=2024-02-01", "start"),
    ]:
        response = adj.get(url)
        assert response.status_code == 400, url
        assert response.json()["parameter"] == parameter, url


def test_corporate_actions_are_cached_like_the_others(adj: ApiClient) -> None:
    url = "/instruments/ADJ/corporate-actions"
    first = adj.get(url)
    assert first.headers["cache-control"] == "public, max-age=0, must-revalidate"
    assert adj.get(url, headers={"If-None-Match": first.headers["etag"]}).status_code == 304
    assert len(service_of(adj).cache) == 1


def test_a_file_without_the_actions_table_answers_as_if_no_event_were_known(
    client: ApiClient, dataset: Dataset
) -> None:
    """The shared template is loaded by the bars writer alone: no corporate_actions table."""
    conn = duckdb.connect(str(dataset.home.duckdb_path), read_only=True)
    try:
        tables = {r[0] for r in conn.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    finally:
        conn.close()
    assert ACTIONS_TABLE not in tables
    raw = client.get("/instruments/MSFT/ohlcv?interval=1w").json()
    for adjustment in ("split", "dividend", "all"):
        body = client.get(f"/instruments/MSFT/ohlcv?interval=1w&adjustment={adjustment}").json()
        assert body["bars"] == raw["bars"]
    stats = client.get("/instruments/MSFT/stats?adjustment=all").json()
    assert stats["count"] == len(dataset.rows["MSFT"])
    assert client.get("/instruments/MSFT/corporate-actions").json() == {
        "symbol": "MSFT", "splits": [], "dividends": []}  # fmt: skip
    assert client.get("/instruments/ZZZZ/corporate-actions").status_code == 404


def test_before_the_first_load_the_new_endpoint_is_404(
    tmp_path: Path, make_client: MakeClient
) -> None:
    home = DataHome(tmp_path / "empty")
    home.root.mkdir()
    client = make_client(home)
    assert client.get("/instruments/AAPL/corporate-actions").status_code == 404
    assert client.get("/instruments/AAPL/ohlcv?adjustment=all").status_code == 404
    assert client.get("/instruments/AAPL/stats?adjustment=split").status_code == 404


CACHED_URLS = [
    "/instruments/ADJ/ohlcv?adjustment=all",
    "/instruments/ADJ/ohlcv?adjustment=split&interval=1mo",
    "/instruments/ADJ/ohlcv?adjustment=dividend",
    "/instruments/ADJ/stats?adjustment=all",
    "/instruments/ADJ/corporate-actions",
]


def test_a_load_of_only_corporate_actions_invalidates_every_answer_using_them(
    adj_home: DataHome, make_client: MakeClient
) -> None:
    """A revised split, a vanished dividend and a new one: bars unchanged, yet from the first
    poll after the load no answer is computed with the old factors. (The watch thread's poll
    is parked an hour away, so the test decides when it runs.)"""
    client = make_client(adj_home, poll_seconds=3600.0)
    service = service_of(client)
    before = {url: client.get(url) for url in CACHED_URLS}
    revised = split("ADJ", date(2024, 1, 22), 3.0)
    vanished = next(e for e in EVENTS if e.ex_date == date(2024, 1, 20))
    new = dividend("ADJ", date(2024, 2, 6), 2.0)
    service.reader.close()  # a writer in this very process: hand the file over, as poll() would
    load_actions(adj_home, [revised, new], delete=[vanished])
    assert all(client.get(url).content == r.content for url, r in before.items())
    assert service.cache.poll()
    events = [revised if e.ex_date == revised.ex_date and e.kind == "split" else e
              for e in EVENTS if e != vanished] + [new]  # fmt: skip
    after = client.get(CACHED_URLS[0])
    assert after.json()["bars"] == approx_bars(as_bars(expected(adj_rows(), events, "all")))
    assert after.headers["etag"] != before[CACHED_URLS[0]].headers["etag"]
    old_etag = before[CACHED_URLS[0]].headers["etag"]
    assert client.get(CACHED_URLS[0], headers={"If-None-Match": old_etag}).status_code == 200
    for url in CACHED_URLS[1:]:
        assert client.get(url).content != before[url].content, url
    actions = client.get("/instruments/ADJ/corporate-actions").json()
    assert "2024-01-20" not in [d["ex_date"] for d in actions["dividends"]]
    assert {"ex_date": "2024-01-22", "split_factor": 3.0} in actions["splits"]


def test_the_first_actions_load_into_an_old_file_is_served(
    dataset: Dataset, make_client: MakeClient
) -> None:
    """The file had no corporate_actions table (the API made a temporary stand-in); the load
    creates it, and after it the real table is read, not the stand-in."""
    client = make_client(dataset.home, poll_seconds=3600.0)
    service = service_of(client)
    url = "/instruments/MSFT/ohlcv?adjustment=split"
    before = client.get(url).json()["bars"]
    service.reader.close()
    load_actions(dataset.home, [split("MSFT", date(2024, 2, 1), 2.0)])
    assert service.cache.poll()
    after = client.get(url).json()["bars"]
    for old, new in zip(before, after, strict=True):
        halved = new["timestamp"] < "2024-02-01"
        assert new["close"] == (old["close"] / 2 if halved else old["close"])
        assert new["volume"] == (old["volume"] * 2 if halved else old["volume"])


def test_every_symbols_steps_are_computed_in_the_background_and_again_per_version(
    adj_home: DataHome, make_client: MakeClient
) -> None:
    """The first adjusted question starts computing every symbol's factor steps at once; the
    answers from them follow the formula for symbols not asked yet too. A new data version
    drops them and, since adjusted questions were asked, computes the new ones without
    waiting for a question. (The watch thread is parked; the test polls.)"""
    client = make_client(adj_home, poll_seconds=3600.0)
    service = service_of(client)
    assert not service.factors.complete
    first = client.get("/instruments/ADJ/ohlcv?adjustment=all&end=2024-01-31").json()["bars"]
    january = [r for r in expected(adj_rows(), EVENTS, "all") if r[0] < datetime(2024, 2, 1)]
    assert first == approx_bars(as_bars(january))
    wait_for(lambda: service.factors.complete, "every symbol's steps computed")
    for symbol, base in (("ADJ", 100.0), ("OTHER", 300.0), ("PLAIN", 50.0)):
        bars = client.get(f"/instruments/{symbol}/ohlcv?adjustment=all").json()["bars"]
        assert bars == approx_bars(as_bars(expected(adj_rows(symbol, base), EVENTS, "all")))

    service.reader.close()  # a writer in this very process: hand the file over, as poll() would
    new = split("PLAIN", date(2024, 1, 17), 4.0)
    load_actions(adj_home, [new])
    assert service.cache.poll()
    service.factors.follow(service.cache.snapshot()[1])
    assert not service.factors.complete  # the old version's steps are gone
    wait_for(lambda: service.factors.complete, "the new version's steps computed")
    bars = client.get("/instruments/PLAIN/ohlcv?adjustment=split").json()["bars"]
    assert bars == approx_bars(as_bars(expected(adj_rows("PLAIN", 50.0), [*EVENTS, new], "split")))
    assert bars[0]["close"] == pytest.approx(50.0 / 4.0, rel=1e-12)
