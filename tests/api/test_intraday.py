"""Intraday bars over HTTP: the API as `make api` serves it (granian on loopback) over a real
DuckDB file holding the daily test data set and ``ohlcv_intraday`` rows.

AAPL has 1-minute bars for two full sessions (2024-03-04 and 03-05, 390 each) and five on
2024-03-11 (after the switch to daylight saving time), 5-minute bars for 03-04 and 60-minute
bars for 03-05; a 4:1 split has its ex-date on 03-05. MSFT has daily bars only; ``IONLY`` has
intraday bars only. Rows are written the way a loader writes them: under the write lock, then a
new data version (``market_core.handoff``).
"""

from __future__ import annotations

import csv
import io
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import date, datetime, timedelta
from datetime import time as clock
from pathlib import Path
from typing import Any

import pytest
import requests

from market_api.bars.schemas import CSV_COLUMNS
from market_core.handoff import exclusive_write
from market_core.home import DataHome
from market_core.schema import CREATE_ACTIONS_SQL, CREATE_INTRADAY_SQL, INTRADAY_TABLE
from tests.api.conftest import Dataset
from tests.api.test_adjustments import UPSERT_ACTIONS_SQL, Event, split
from tests.api.writer import connect_with_backoff
from tests.served_api import serve

pytestmark = pytest.mark.e2e

IntradayRow = tuple[datetime, str, str, float, float, float, float, int]
"""timestamp (naive, New York), symbol, interval, open, high, low, close, volume."""

UPSERT_INTRADAY_SQL = f"""
INSERT INTO {INTRADAY_TABLE} VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (symbol, interval, timestamp) DO UPDATE SET
    open = excluded.open, high = excluded.high, low = excluded.low,
    close = excluded.close, volume = excluded.volume
"""

OPEN = clock(9, 30)
SPLIT_DAY = date(2024, 3, 5)
DST_DAY = date(2024, 3, 11)
WAIT_SECONDS = 10.0
"""Bound of the wait for the served API to see a load (it polls every 25 ms)."""


def session(symbol: str, interval: str, day: date, count: int, base: float) -> list[IntradayRow]:
    """``count`` bars of ``interval`` minutes from the open of ``day``, distinct prices."""
    minutes = int(interval.removesuffix("min"))
    rows: list[IntradayRow] = []
    for i in range(count):
        start = datetime.combine(day, OPEN) + timedelta(minutes=i * minutes)
        open_ = round(base + i * 0.01, 2)
        close = round(open_ + (0.02 if i % 2 else -0.02), 2)
        rows.append((start, symbol, interval, open_, round(max(open_, close) + 0.05, 2),
                     round(min(open_, close) - 0.05, 2), close, 1000 + i))  # fmt: skip
    return rows


ROWS: list[IntradayRow] = [
    *session("AAPL", "1min", date(2024, 3, 4), 390, 180.0),
    *session("AAPL", "1min", SPLIT_DAY, 390, 46.0),
    *session("AAPL", "1min", DST_DAY, 5, 47.0),
    *session("AAPL", "5min", date(2024, 3, 4), 78, 180.0),
    *session("AAPL", "60min", SPLIT_DAY, 7, 46.0),
    *session("IONLY", "15min", SPLIT_DAY, 26, 10.0),
]
EVENTS = [split("AAPL", SPLIT_DAY, 4.0)]


def load_intraday(
    home: DataHome, rows: Sequence[IntradayRow], events: Sequence[Event] = ()
) -> None:
    """The loader's side: write lock, upsert in one transaction, close, new data version."""
    with exclusive_write(home) as handoff:
        conn, _ = connect_with_backoff(home.duckdb_path)
        try:
            conn.execute(CREATE_INTRADAY_SQL)
            conn.execute(CREATE_ACTIONS_SQL)
            conn.begin()
            conn.executemany(UPSERT_INTRADAY_SQL, [list(row) for row in rows])
            if events:
                conn.executemany(UPSERT_ACTIONS_SQL, [list(vars(e).values()) for e in events])
            conn.commit()
        finally:
            conn.close()
        handoff.finish(changed=True)


def copy_home(template: Dataset, root: Path) -> DataHome:
    home = DataHome(root)
    home.root.mkdir(parents=True)
    for path in (template.home.duckdb_path, template.home.version_path):
        shutil.copy2(path, home.root / path.name)
    return home


def bars_of(rows: Sequence[IntradayRow], symbol: str, interval: str) -> list[IntradayRow]:
    return sorted(r for r in rows if r[1] == symbol and r[2] == interval)


def as_json(row: IntradayRow, offset: str = "-05:00") -> dict[str, Any]:
    ts, _, _, open_, high, low, close, volume = row
    return {"timestamp": ts.isoformat() + offset, "open": open_, "high": high, "low": low,
            "close": close, "volume": volume}  # fmt: skip


@pytest.fixture(scope="module")
def served(template: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One server for the read-only tests, over a home holding ``ROWS`` and ``EVENTS``."""
    root = tmp_path_factory.mktemp("intraday")
    home = copy_home(template, root / "home")
    load_intraday(home, ROWS, EVENTS)
    with serve(home, root / "granian.log", MARKET_API_CACHE_ENTRIES="100") as api:
        yield api.base


def get(base: str, path: str, **headers: str) -> requests.Response:
    return requests.get(base + path, headers=headers, timeout=10)


def test_each_interval_answers_only_its_own_bars(served: str) -> None:
    for interval, count in (("1min", 785), ("5min", 78), ("60min", 7)):
        body = get(served, f"/instruments/aapl/ohlcv?interval={interval}").json()
        assert (body["symbol"], body["interval"], body["adjustment"]) == ("AAPL", interval, "raw")
        expected = [as_json(r) for r in bars_of(ROWS, "AAPL", interval)]
        dst = [bar for bar in expected if bar["timestamp"].startswith(str(DST_DAY))]
        for bar in dst:  # after the switch to daylight saving time the offset is -04:00
            bar["timestamp"] = bar["timestamp"].replace("-05:00", "-04:00")
        assert body["bars"] == expected
        assert len(body["bars"]) == count
    assert get(served, "/instruments/AAPL/ohlcv?interval=15min").json()["bars"] == []
    only = get(served, "/instruments/IONLY/ohlcv?interval=15min").json()["bars"]
    assert len(only) == 26 and only[0]["timestamp"] == "2024-03-05T09:30:00-05:00"


def test_known_symbols_without_intraday_bars_answer_empty_and_unknown_ones_404(
    served: str,
) -> None:
    empty = get(served, "/instruments/MSFT/ohlcv?interval=1min")
    assert empty.status_code == 200
    assert empty.json() == {"symbol": "MSFT", "interval": "1min", "adjustment": "raw", "bars": []}
    unknown = get(served, "/instruments/ZZZZ/ohlcv?interval=1min&start=2024-03-04")
    assert unknown.status_code == 404
    assert unknown.json()["error"] == "unknown_symbol"


def test_the_json_keys_are_the_daily_answer_s(served: str) -> None:
    daily = get(served, "/instruments/AAPL/ohlcv?limit=1").json()
    intraday = get(served, "/instruments/AAPL/ohlcv?interval=1min&limit=1").json()
    assert list(intraday) == list(daily)
    assert list(intraday["bars"][0]) == list(daily["bars"][0])
    assert len(daily["bars"][0]["timestamp"]) == 10  # the daily format is unchanged: a date
    assert intraday["bars"][0]["timestamp"] == "2024-03-11T09:34:00-04:00"


@pytest.mark.parametrize(
    ("query", "first", "last", "count"),
    [
        ("start=2024-03-05&end=2024-03-05", "2024-03-05T09:30", "2024-03-05T15:59", 390),
        ("end=2024-03-04", "2024-03-04T09:30", "2024-03-04T15:59", 390),
        ("start=2024-03-04T10:00&end=2024-03-04T10:04:00", "2024-03-04T10:00",
         "2024-03-04T10:04", 5),
        ("start=2024-03-04T15:00:00Z&end=2024-03-04T10:04:00-05:00", "2024-03-04T10:00",
         "2024-03-04T10:04", 5),
        ("start=2024-03-04T15:00:00%2B00:00&end=2024-03-04T10:01", "2024-03-04T10:00",
         "2024-03-04T10:01", 2),
        ("start=2024-03-04T15:00:00+00:00&end=2024-03-04T10:01", "2024-03-04T10:00",
         "2024-03-04T10:01", 2),  # an unencoded + arrives as a space: still read as +
        ("start=2024-03-04T15:58&end=2024-03-05", "2024-03-04T15:58", "2024-03-05T15:59", 392),
        ("start=2024-03-04T10:00:30&end=2024-03-04T10:00:59.999999", None, None, 0),
        ("start=2024-03-05&limit=3", "2024-03-11T09:32", "2024-03-11T09:34", 3),
        ("start=2024-03-06&end=2024-03-08", None, None, 0),
        ("start=0001-01-01&end=9999-12-31", "2024-03-04T09:30", "2024-03-11T09:34", 785),
        ("start=9999-12-31T23:59:59.999999&end=9999-12-31T23:59:59.999999", None, None, 0),
    ],
)  # fmt: skip
def test_start_and_end_as_dates_and_datetimes_are_inclusive(
    served: str, query: str, first: str | None, last: str | None, count: int
) -> None:
    bars = get(served, f"/instruments/AAPL/ohlcv?interval=1min&{query}").json()["bars"]
    assert len(bars) == count
    if count:
        assert bars[0]["timestamp"][:16] == first
        assert bars[-1]["timestamp"][:16] == last


def test_a_datetime_bound_of_daily_bars_counts_as_its_date(served: str) -> None:
    by_date = get(served, "/instruments/AAPL/ohlcv?start=2024-03-04&end=2024-03-05").json()
    by_time = get(served, "/instruments/AAPL/ohlcv?start=2024-03-04T15:00&end=2024-03-05T01:00")
    assert by_time.status_code == 200
    assert by_time.json() == by_date
    assert [b["timestamp"] for b in by_date["bars"]] == ["2024-03-04", "2024-03-05"]
    weeks = get(served, "/instruments/AAPL/ohlcv?interval=1w&start=2024-03-04T23:59:59").json()
    assert weeks["bars"][0]["timestamp"] == "2024-03-04"


def test_csv_has_the_daily_columns_and_iso_timestamps(served: str) -> None:
    answer = get(served, "/instruments/AAPL/ohlcv?interval=60min", Accept="text/csv")
    assert answer.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(answer.text)))
    assert tuple(rows[0]) == CSV_COLUMNS
    expected = bars_of(ROWS, "AAPL", "60min")
    assert len(rows) == 1 + len(expected)
    assert rows[1] == ["2024-03-05T09:30:00-05:00", *map(repr, expected[0][3:7]),
                       str(expected[0][7])]  # fmt: skip
    assert rows[-1][0] == "2024-03-05T15:30:00-05:00"


def test_etag_and_304_as_for_daily_bars(served: str) -> None:
    path = "/instruments/AAPL/ohlcv?interval=5min&start=2024-03-04T12:00"
    first = get(served, path)
    assert first.headers["cache-control"] == "public, max-age=0, must-revalidate"
    again = get(served, path)  # from the cache-first layer
    assert again.content == first.content
    assert again.headers["etag"] == first.headers["etag"]
    assert get(served, path, **{"If-None-Match": first.headers["etag"]}).status_code == 304
    other = get(served, "/instruments/AAPL/ohlcv?interval=1min&start=2024-03-04T12:00")
    assert other.headers["etag"] != first.headers["etag"]


def test_adjustment_takes_the_factor_of_the_bar_s_day_across_a_split(served: str) -> None:
    path = "/instruments/AAPL/ohlcv?interval=1min&start=2024-03-04T15:59&end=2024-03-05T09:30"
    raw = get(served, path).json()["bars"]
    adjusted = get(served, path + "&adjustment=split").json()
    assert adjusted["adjustment"] == "split"
    before, after = adjusted["bars"]
    assert before["timestamp"] == "2024-03-04T15:59:00-05:00"
    assert (before["close"], before["volume"]) == (raw[0]["close"] / 4, raw[0]["volume"] * 4)
    assert before["open"] == raw[0]["open"] / 4 and before["low"] == raw[0]["low"] / 4
    assert after == raw[1]  # the ex-date's own bars are already after the split
    # The same factor as the daily bar of that day.
    daily = "/instruments/AAPL/ohlcv?start=2024-03-04&end=2024-03-04"
    raw_day, adjusted_day = get(served, daily).json(), get(served, daily + "&adjustment=split")
    assert raw_day["bars"][0]["close"] / adjusted_day.json()["bars"][0]["close"] == 4.0
    everything = get(served, path + "&adjustment=all").json()["bars"]
    assert everything[0]["close"] == raw[0]["close"] / 4  # no dividends: only the split


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("interval=2min", "interval"),
        ("interval=1MIN", "interval"),
        ("interval=1min&start=2024-03-04T25:00", "start"),
        ("interval=1min&start=20240304", "start"),
        ("interval=1min&start=2024-03-04T10", "start"),
        ("interval=1min&end=2024-03-04T10:00:00%2B5", "end"),
        ("interval=1min&end=2024-02-30T10:00", "end"),
        ("interval=1min&end=now", "end"),
        ("interval=1min&start=2024-03-04T10:00&end=2024-03-04T09:59", "start"),
        ("interval=1min&start=2024-03-05&end=2024-03-04T23:00", "start"),
        ("start=2024-03-05T10:00&end=2024-03-04T23:00", "start"),
        ("interval=1min&limit=0", "limit"),
        ("interval=1min&adjustment=some", "adjustment"),
    ],
)
def test_bad_parameters_are_400_naming_the_parameter(
    served: str, query: str, parameter: str
) -> None:
    answer = get(served, f"/instruments/AAPL/ohlcv?{query}")
    assert answer.status_code == 400, answer.text
    body = answer.json()
    assert (body["error"], body["parameter"]) == ("invalid_parameter", parameter)
    assert body["detail"]


def test_a_load_empties_the_cache(template: Dataset, tmp_path: Path) -> None:
    home = copy_home(template, tmp_path / "home")
    load_intraday(home, session("AAPL", "1min", SPLIT_DAY, 3, 46.0))
    with serve(home, tmp_path / "granian.log") as api:
        path = "/instruments/AAPL/ohlcv?interval=1min&start=2024-03-05"
        before = get(api.base, path)
        assert len(before.json()["bars"]) == 3
        assert get(api.base, path).headers["etag"] == before.headers["etag"]  # cached
        revised = (datetime.combine(SPLIT_DAY, OPEN), "AAPL", "1min", 1.0, 2.0, 0.5, 1.5, 7)
        added = (datetime.combine(SPLIT_DAY, clock(9, 33)), "AAPL", "1min", 3.0, 4.0, 2.5, 3.5, 9)
        load_intraday(home, [revised, added])
        after = wait_for_change(lambda: get(api.base, path), before.headers["etag"])
        bars = after.json()["bars"]
        assert len(bars) == 4
        assert bars[0] == as_json(revised)
        assert bars[-1] == as_json(added)


def wait_for_change(ask: Callable[[], requests.Response], etag: str) -> requests.Response:
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        answer = ask()
        if answer.status_code == 200 and answer.headers["etag"] != etag:
            return answer
        assert time.monotonic() < deadline, "the API never served the load"
        time.sleep(0.05)


def test_a_file_without_the_intraday_table_answers_empty_never_500(
    template: Dataset, tmp_path: Path
) -> None:
    home = copy_home(template, tmp_path / "home")  # the daily file as it was before intraday
    with serve(home, tmp_path / "granian.log") as api:
        empty = get(api.base, "/instruments/AAPL/ohlcv?interval=1min&adjustment=all")
        assert empty.status_code == 200
        assert empty.json()["bars"] == []
        assert get(api.base, "/instruments/AAPL/ohlcv?interval=60min", Accept="text/csv").text \
            == ",".join(CSV_COLUMNS) + "\r\n"  # fmt: skip
        assert get(api.base, "/instruments/ZZZZ/ohlcv?interval=1min").status_code == 404
        assert len(get(api.base, "/instruments/AAPL/ohlcv?limit=2").json()["bars"]) == 2
