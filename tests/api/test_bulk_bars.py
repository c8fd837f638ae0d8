"""``GET /bars``: many symbols in one answer, in pages that stay on one data version.

The served API reads a real DuckDB file holding the daily bars of the API fixtures, the intraday
bars of ``test_intraday`` and corporate actions (a split of AAPL, a dividend of MSFT), so every
interval and adjustment is asked. It reads in batches of 7 bars and keeps answers of at most
4 KiB in its cache: most pages here are several queries, and most answers stream past the cache.
Every bar of ``/bars`` is compared with the single-symbol answer's, which the other API tests
check against the table.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests

from market_api.bars.bulk import (
    BarBatches,
    BulkQuestion,
    Key,
    MonthCounts,
    Page,
    Span,
    plan,
)
from market_api.bars.by_date import FOLDER, DateOrdered, suits
from market_api.bars.key_order import in_key_order, is_key_ordered
from market_api.bars.schemas import LONG_COLUMNS, Adjustment, Interval
from market_api.bars.tokens import KEY_FILE, PageToken, TokenSigner, signing_key
from market_api.http.errors import InvalidParameter
from market_api.http.ranges import ByteRange, RangeSlicer, parse_range
from market_api.readers.errors import StoreUnavailable, VersionGone
from market_api.settings import Settings
from market_core.env import SettingsError
from market_core.home import DataHome
from market_core.schema import CREATE_TABLE_SQL, TABLE
from tests.api.conftest import Dataset, MakeClient, generate_bars, service_of
from tests.api.test_adjustments import dividend
from tests.api.test_handoff import wait_for
from tests.api.test_intraday import EVENTS, ROWS, copy_home, load_intraday
from tests.api.writer import Row as StoredRow
from tests.api.writer import load
from tests.served_api import serve

Row = tuple[Any, ...]
"""symbol, timestamp (as in JSON), open, high, low, close, volume."""

MSFT_DIVIDEND = dividend("MSFT", date(2024, 2, 15), 0.5)
MAX_PAGES = 2000
"""Bound of every loop that follows tokens: a broken token would otherwise loop for ever."""


@pytest.fixture(scope="module")
def home(template: Dataset, tmp_path_factory: pytest.TempPathFactory) -> DataHome:
    """Daily bars of AAPL, MSFT, BRK.B; intraday bars of AAPL and IONLY; a split of AAPL on
    2024-03-05 and a dividend of MSFT on 2024-02-15 (read-only for the module's tests)."""
    home = copy_home(template, tmp_path_factory.mktemp("bulk") / "home")
    load_intraday(home, ROWS, [*EVENTS, MSFT_DIVIDEND])
    return home


@pytest.fixture(scope="module")
def served(home: DataHome, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("bulk-log") / "granian.log"
    with serve(
        home,
        log,
        MARKET_API_BATCH_ROWS="7",
        MARKET_API_CACHE_ANSWER_BYTES="4096",
        MARKET_API_CACHE_ENTRIES="100",
        MARKET_API_BY_DATE_MIN_BARS="0",
    ) as api:  # a date-ordered copy, however small; fmt: skip
        yield api.base


def get(base: str, path: str, **headers: str) -> requests.Response:
    return requests.get(f"{base}{path}", headers=headers, timeout=30)


def rows_of(page: dict[str, Any]) -> list[Row]:
    return [
        (symbol, bar["timestamp"], bar["open"], bar["high"], bar["low"], bar["close"],
         bar["volume"])
        for symbol, bars in page["bars"].items()
        for bar in bars
    ]  # fmt: skip


def follow(base: str, query: str, limit: int) -> tuple[list[Row], int]:
    """Every page of ``query`` at ``limit``, following ``next_page_token``: rows and pages."""
    rows: list[Row] = []
    token: str | None = None
    for pages in range(1, MAX_PAGES):
        more = "" if token is None else f"&page_token={quote(token)}"
        response = get(base, f"/bars?{query}&limit={limit}{more}")
        assert response.status_code == 200, response.text
        page = response.json()
        got = rows_of(page)
        assert 0 < len(got) <= limit or (not got and page["next_page_token"] is None)
        rows += got
        token = page["next_page_token"]
        assert response.headers.get("next-page-token") == token
        if token is None:
            return rows, pages
    raise AssertionError(f"{query}: more than {MAX_PAGES} pages")


QUESTIONS = [
    "",
    "symbols=msft,AAPL,brk.b&adjustment=all",
    "symbols=AAPL,MSFT&interval=1w&adjustment=split",
    "interval=1mo&start=2023-12-15&end=2024-03-20&adjustment=dividend",
    "symbols=AAPL,IONLY&interval=1min&adjustment=split&start=2024-03-04T15:00&end=2024-03-05T10:00",
    "interval=15min",
]


@pytest.mark.e2e
@pytest.mark.parametrize("query", QUESTIONS)
def test_pages_followed_to_the_end_give_exactly_the_rows_of_one_unpaged_query(
    served: str, query: str
) -> None:
    whole = get(served, f"/bars?{query}&limit=1000000").json()
    assert whole["next_page_token"] is None
    expected = rows_of(whole)
    assert expected == sorted(expected, key=lambda row: (row[0], row[1]))  # symbol, then time
    assert len(expected) > 7  # several batches, so several queries, even unpaged
    for limit in (3, 7, 8, 40):
        rows, pages = follow(served, query, limit)
        assert rows == expected, (query, limit)
        assert pages == -(-len(expected) // limit)  # the last full page says it is the last


def long_rows(table: pa.Table) -> list[Row]:
    """An Arrow or Parquet page's rows as ``rows_of`` gives the JSON ones."""
    return [
        tuple(value.isoformat() if isinstance(value, (date, datetime)) else value
              for value in row.values())
        for row in table.to_pylist()
    ]  # fmt: skip


def csv_rows(body: bytes) -> list[Row]:
    lines = list(csv.reader(io.StringIO(body.decode())))
    assert tuple(lines[0]) == LONG_COLUMNS
    return [(s, t, float(o), float(h), float(lo), float(c), int(v)) for s, t, o, h, lo, c, v
            in lines[1:]]  # fmt: skip


READERS: dict[str, Callable[[bytes], list[Row]]] = {
    "arrow": lambda body: long_rows(pa.ipc.open_stream(body).read_all()),
    "parquet": lambda body: long_rows(pq.read_table(io.BytesIO(body))),
    "csv": csv_rows,
}


@pytest.mark.e2e
@pytest.mark.parametrize("fmt", list(READERS))
@pytest.mark.parametrize("query", QUESTIONS[:2] + QUESTIONS[4:5])
def test_arrow_parquet_and_csv_pages_are_followed_by_their_next_page_token_header(
    served: str, query: str, fmt: str
) -> None:
    """The token of the next page is in the ``Next-Page-Token`` header, in every format."""
    expected = rows_of(get(served, f"/bars?{query}&limit=1000000").json())
    read = READERS[fmt]
    for limit in (3, 8, 40):
        rows: list[Row] = []
        more, pages = "", 0
        while pages < MAX_PAGES:
            pages += 1
            response = get(served, f"/bars?{query}&limit={limit}&format={fmt}{more}")
            assert response.status_code == 200, response.text
            got = read(response.content)
            assert 0 < len(got) <= limit
            rows += got
            token = response.headers.get("next-page-token")
            if token is None:
                break
            assert len(got) == limit
            more = f"&page_token={quote(token)}"
        assert rows == expected, (query, fmt, limit)
        assert pages == -(-len(expected) // limit)


# Stores whose rows are not stored in key order. A span of symbols is read without ORDER BY
# (``key_order``): these fail if a page follows the store's order instead of (symbol, time).

UNORDERED_SPANS = {
    "AAA": (date(2024, 1, 22), date(2024, 3, 29)),
    "BBB": (date(2024, 1, 22), date(2024, 3, 29)),
    "CC.D": (date(2024, 2, 1), date(2024, 3, 29)),
    "DDD": (date(2024, 1, 22), date(2024, 2, 29)),
    "LONG": (date(2023, 9, 1), date(2024, 3, 29)),  # more than a batch: a span of its own
    "ZZZ": (date(2024, 1, 22), date(2024, 3, 29)),
}
UNORDERED_BARS = sorted(
    (row for symbol, (a, b) in UNORDERED_SPANS.items() for row in generate_bars(symbol, a, b)),
    key=lambda row: (row[1], row[0]),
)
"""Every layout's bars, in key order."""


def by_day(rows: list[StoredRow]) -> list[list[StoredRow]]:
    days = sorted({row[0] for row in rows})
    return [[row for row in reversed(rows) if row[0] == day] for day in days]


LAYOUTS: dict[str, Callable[[list[StoredRow]], list[list[StoredRow]]]] = {
    "key order": lambda rows: [rows],
    # the history, then a load per day, each day's symbols in reverse order
    "daily increments": lambda rows: [
        [row for row in rows if row[0] < datetime(2024, 3, 18)],
        *by_day([row for row in rows if row[0] >= datetime(2024, 3, 18)]),
    ],
    # the recent bars first, the older ones backfilled after them
    "backfill": lambda rows: [
        [row for row in rows if row[0] >= datetime(2024, 2, 1)],
        [row for row in rows if row[0] < datetime(2024, 2, 1)],
    ],
    # a load per symbol, the last symbol first, each newest bar first
    "symbols in any order": lambda rows: [
        [row for row in reversed(rows) if row[1] == symbol]
        for symbol in sorted(UNORDERED_SPANS, reverse=True)
    ],
}
UNORDERED_QUESTIONS = [
    "",
    "symbols=zzz,AAA,cc.d&start=2024-01-15&end=2024-03-10",
    "start=2024-02-26&end=2024-03-06",
    "interval=1w",
    "symbols=LONG,BBB&interval=1mo&adjustment=all",
]


@pytest.fixture(scope="module")
def layout_homes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, DataHome]:
    """A data home per layout, each holding the same bars, loaded as the writer loads them."""
    homes: dict[str, DataHome] = {}
    for number, (name, loads) in enumerate(LAYOUTS.items()):
        homes[name] = DataHome(tmp_path_factory.mktemp(f"layout-{number}") / "home")
        for rows in loads(UNORDERED_BARS):
            load(homes[name], rows)
    return homes


@pytest.fixture(scope="module")
def layouts(layout_homes: dict[str, DataHome]) -> Iterator[dict[str, str]]:
    """A served API per layout, in batches of 100 bars (spans of two or three symbols; LONG a
    span of its own, read in several batches)."""
    with contextlib.ExitStack() as stack:
        bases: dict[str, str] = {}
        for name, home in layout_homes.items():
            log = home.root.parent / "granian.log"
            api = stack.enter_context(serve(home, log, MARKET_API_BATCH_ROWS="100",
                                            MARKET_API_BY_DATE_MIN_BARS="0"))  # fmt: skip
            bases[name] = api.base
        yield bases


def stored_order(home: DataHome) -> list[tuple[str, datetime]]:
    conn = duckdb.connect(str(home.duckdb_path), read_only=True)
    try:
        return conn.execute("SELECT symbol, timestamp FROM ohlcv_data").fetchall()
    finally:
        conn.close()


def test_the_layouts_store_their_rows_out_of_key_order(layout_homes: dict[str, DataHome]) -> None:
    """What the served tests below rely on: DuckDB scans these stores in their load order."""
    keys = [(row[1], row[0]) for row in UNORDERED_BARS]
    for name, home in layout_homes.items():
        stored = stored_order(home)
        assert sorted(stored) == keys, name
        assert (stored == keys) == (name == "key order"), name


def daily_rows(symbols: set[str], start: date, end: date) -> list[Row]:
    return [
        (symbol, at.date().isoformat(), o, h, lo, c, v)
        for at, symbol, o, h, lo, c, v in UNORDERED_BARS
        if symbol in symbols and start <= at.date() <= end
    ]


@pytest.mark.e2e
@pytest.mark.parametrize("layout", [name for name in LAYOUTS if name != "key order"])
def test_pages_are_in_key_order_whatever_order_the_store_holds_its_rows_in(
    layouts: dict[str, str], layout: str
) -> None:
    """Every answer equals the key-ordered store's, row for row; the daily ones also equal the
    bars themselves, sorted here; pages followed to the end give the unpaged rows."""
    base, reference = layouts[layout], layouts["key order"]
    whole = {"": daily_rows(set(UNORDERED_SPANS), date(2000, 1, 1), date(2100, 1, 1)),
             UNORDERED_QUESTIONS[1]: daily_rows({"AAA", "CC.D", "ZZZ"}, date(2024, 1, 15),
                                                date(2024, 3, 10)),
             UNORDERED_QUESTIONS[2]: daily_rows(set(UNORDERED_SPANS), date(2024, 2, 26),
                                                date(2024, 3, 6))}  # fmt: skip
    for query in UNORDERED_QUESTIONS:
        expected = rows_of(get(reference, f"/bars?{query}&limit=1000000").json())
        assert expected == whole.get(query, expected), query
        assert expected == sorted(expected, key=lambda row: (row[0], row[1])), query
        arrow = get(base, f"/bars?{query}&limit=1000000&format=arrow")
        assert long_rows(pa.ipc.open_stream(arrow.content).read_all()) == expected, query
        assert rows_of(get(base, f"/bars?{query}&limit=1000000").json()) == expected, query
        for limit in (7, 101, 250):  # one batch; several spans, the last cut
            assert follow(base, query, limit)[0] == expected, (query, limit)


@pytest.mark.e2e
@pytest.mark.parametrize("query", QUESTIONS)
def test_each_bar_is_the_single_symbol_answer_s(served: str, query: str) -> None:
    """Same keys, same values to the last bit, for every interval and adjustment."""
    page = get(served, f"/bars?{query}&limit=1000000").json()
    single_query = "&".join(p for p in query.split("&") if p and not p.startswith("symbols="))
    assert page["bars"]
    for symbol, bars in page["bars"].items():
        one = get(served, f"/instruments/{symbol}/ohlcv?{single_query}").json()
        assert bars == one["bars"], symbol
        assert (page["interval"], page["adjustment"]) == (one["interval"], one["adjustment"])


@pytest.mark.e2e
def test_the_whole_market_on_one_day(served: str, home: DataHome) -> None:
    page = get(served, "/bars?start=2024-03-01&end=2024-03-01").json()
    days = {symbol: [bar["timestamp"] for bar in bars] for symbol, bars in page["bars"].items()}
    assert days == {"AAPL": ["2024-03-01"], "BRK.B": ["2024-03-01"], "MSFT": ["2024-03-01"]}
    assert page["next_page_token"] is None
    assert page["missing_symbols"] == []
    assert list(page) == ["interval", "adjustment", "bars", "next_page_token", "missing_symbols"]


SHORT_WINDOWS = [
    "start=2024-03-01&end=2024-03-01",
    "start=2024-02-26&end=2024-03-08&adjustment=all",
    "symbols=AAPL,MSFT&start=2024-02-20&end=2024-03-08&interval=1w&adjustment=split",
]


@pytest.mark.e2e
def test_questions_of_a_few_days_give_the_same_bars_once_the_date_ordered_copy_is_there(
    served: str, home: DataHome
) -> None:
    before = {query: get(served, f"/bars?{query}&limit=1000000").json() for query in SHORT_WINDOWS}
    folder = home.root / FOLDER
    wait_for(lambda: any(folder.glob("*-????????.duckdb")), "a date-ordered copy", limit=30)
    for query in SHORT_WINDOWS:
        assert get(served, f"/bars?{query}&limit=999999").json() == before[query]
        assert follow(served, query, 3)[0] == rows_of(before[query])


def test_a_store_under_min_bars_gets_no_date_ordered_copy(home: DataHome, tmp_path: Path) -> None:
    conn = duckdb.connect(str(home.duckdb_path), read_only=True)
    bars = conn.execute("SELECT count(*) FROM ohlcv_data").fetchone()
    assert bars is not None and bars[0] > 0

    def store(query: Callable[[duckdb.DuckDBPyConnection], Any]) -> Any:
        return query(conn.cursor())

    small, enough = (
        DateOrdered(tmp_path / "small", bars[0] + 1),
        DateOrdered(tmp_path / "ok", bars[0]),
    )
    try:
        small.want("v1", store)
        enough.want("v1", store)
        wait_for(lambda: enough.runner("v1", store) is not None, "the copy at the bound", limit=30)
        building = lambda: any(t.name == "market-api-by-date" for t in threading.enumerate())  # noqa: E731
        wait_for(lambda: not building(), "both builders done", limit=30)
        small.want("v1", store)  # asked again: still none, and no file
        wait_for(lambda: not building(), "no second try", limit=30)
        assert small.runner("v1", store) is None
        assert not list((tmp_path / "small").glob("*.duckdb*"))
    finally:
        small.close()
        enough.close()
        conn.close()


def test_the_date_ordered_copy_reads_as_the_store_and_a_newer_one_replaces_it(
    home: DataHome, tmp_path: Path
) -> None:
    conn = duckdb.connect(str(home.duckdb_path), read_only=True)
    dated = DateOrdered(tmp_path / FOLDER)

    def store(query: Callable[[duckdb.DuckDBPyConnection], Any]) -> Any:
        return query(conn.cursor())

    def built(version: str) -> bool:
        return dated.runner(version, store) is not None

    orphan = tmp_path / FOLDER / f"{os.getpid()}-0123abcd.duckdb"  # a restarted container's
    orphan.parent.mkdir()
    orphan.write_bytes(b"left behind")
    try:
        dated.want("v1", store)
        wait_for(lambda: built("v1"), "the copy of v1", limit=30)
        assert not orphan.exists()
        for query in ("2024-03-01", "2024-02-20"):
            start = date.fromisoformat(query)
            question = BulkQuestion.parse(
                None, Interval.DAY, start, date(2024, 3, 8), Adjustment.RAW
            )
            assert suits(question)
            copy = dated.runner("v1", store)
            assert copy is not None
            for limit in (3, 1000):
                expected = list(BarBatches(store, question, Page(limit), 7, None))
                assert list(BarBatches(copy, question, Page(limit), 7, None)) == expected
        old = dated.runner("v1", store)
        dated.want("v2", store)
        wait_for(lambda: built("v2"), "the copy of v2", limit=30)
        assert not built("v1") and old is not None
        assert old(lambda cur: cur is not None)  # an answer under way reads the store now
        files = (tmp_path / FOLDER).glob
        wait_for(lambda: len(list(files("*.duckdb*"))) == 1, "the older copy removed")
    finally:
        dated.close()
        conn.close()
    assert not list((tmp_path / FOLDER).glob("*.duckdb*"))
    long = BulkQuestion.parse(
        None, Interval.DAY, date(2024, 1, 1), date(2024, 3, 8), Adjustment.RAW
    )
    assert not suits(long)


@pytest.mark.e2e
def test_unknown_symbols_are_listed_and_the_known_ones_answered(served: str) -> None:
    page = get(served, "/bars?symbols=ZZZ,aapl,NOPE&start=2024-03-01&end=2024-03-04").json()
    assert list(page["bars"]) == ["AAPL"]
    assert page["missing_symbols"] == ["NOPE", "ZZZ"]
    for fmt in ("csv", "arrow", "parquet", "json"):
        answer = get(served, f"/bars?symbols=ZZZ,aapl,NOPE&format={fmt}")
        assert answer.status_code == 200
        assert answer.headers["missing-symbols"] == "NOPE,ZZZ"
    assert "missing-symbols" not in get(served, "/bars?symbols=AAPL&format=csv").headers
    # A known symbol without bars in the range is not missing: it is answered with none.
    empty = get(served, "/bars?symbols=BRK.B,MSFT&start=2024-04-01&end=2024-04-30").json()
    assert (empty["bars"], empty["missing_symbols"]) == ({}, [])
    none_known = get(served, "/bars?symbols=ZZZ,NOPE&format=parquet")
    assert none_known.status_code == 404
    assert none_known.json()["detail"].startswith("NOPE,ZZZ: no bars stored")


def flip(text: str, at: int) -> str:
    return text[:at] + ("A" if text[at] != "A" else "B") + text[at + 1 :]


@pytest.mark.e2e
def test_tampered_and_foreign_tokens_get_a_400_naming_page_token(served: str) -> None:
    query = "symbols=AAPL,MSFT&adjustment=split"
    token = get(served, f"/bars?{query}&limit=5").json()["next_page_token"]
    assert get(served, f"/bars?{query}&limit=5&page_token={quote(token)}").status_code == 200
    payload_end = token.index(".")
    tampered = [flip(token, 3), flip(token, payload_end - 2), flip(token, len(token) - 2),
                token[:-3], token.replace(".", ""), token + ".x", "x" * 40, "é.é"]  # fmt: skip
    for bad in tampered:
        answer = get(served, f"/bars?{query}&limit=5&page_token={quote(bad)}")
        assert answer.status_code == 400, bad
        assert answer.json()["parameter"] == "page_token"
        assert "not one this API issued" in answer.json()["detail"]
    foreign = ["symbols=AAPL&adjustment=split", "symbols=AAPL,MSFT", "symbols=AAPL,MSFT,ZZZ",
               "symbols=AAPL,MSFT&adjustment=split&start=2023-11-02",
               "symbols=AAPL,MSFT&adjustment=split&interval=1w"]  # fmt: skip
    for other in foreign:
        answer = get(served, f"/bars?{other}&page_token={quote(token)}")
        assert answer.status_code == 400, other
        assert answer.json()["parameter"] == "page_token"
        assert "another query" in answer.json()["detail"]
    # The same query spelled otherwise, at another limit and format, is the same query.
    same = get(served, f"/bars?symbols=msft,aapl&adjustment=split&limit=2&format=csv"
                       f"&page_token={quote(token)}")  # fmt: skip
    assert same.status_code == 200
    assert same.text.splitlines()[1].startswith("AAPL,2023-11-08,")


@pytest.mark.e2e
def test_replicas_on_one_data_home_share_the_key_and_a_secret_replaces_it(
    served: str, home: DataHome, tmp_path: Path
) -> None:
    """A second replica on the same data home accepts the first's tokens (the key file in the
    data home); one with ``MARKET_API_TOKEN_SECRET`` set refuses them, and its secret shows
    nowhere, neither in answers nor in its log."""
    query = "symbols=AAPL&limit=4"
    token = get(served, f"/bars?{query}").json()["next_page_token"]
    expected = get(served, f"/bars?{query}&page_token={quote(token)}").content
    assert (home.state_dir / KEY_FILE).stat().st_mode & 0o077 == 0
    with serve(home, tmp_path / "b.log") as replica:
        assert get(replica.base, f"/bars?{query}&page_token={quote(token)}").content == expected
    secret = "another-replica-secret-0123456789"
    with serve(home, tmp_path / "c.log", MARKET_API_TOKEN_SECRET=secret) as other:
        refused = get(other.base, f"/bars?{query}&page_token={quote(token)}")
        assert refused.status_code == 400
        assert refused.json()["parameter"] == "page_token"
        own = get(other.base, f"/bars?{query}").json()["next_page_token"]
        second = get(other.base, f"/bars?{query}&page_token={quote(own)}").json()
        assert second["bars"] == json.loads(expected)["bars"]
        assert secret not in refused.text + own
    assert secret not in (tmp_path / "c.log").read_text()


BAD = [
    ("symbols=", "symbols"),
    ("symbols=AAPL,,MSFT", "symbols"),
    ("symbols=AAPL,%20MSFT", "symbols"),
    ("symbols=%C4%B1bm", "symbols"),  # a dotless i: upper-cased it would read IBM
    ("symbols=ABCDEFGHIJKLM", "symbols"),
    ("symbols=" + ",".join(f"S{i}" for i in range(1001)), "symbols"),
    ("symbols=AAPL&symbols=MSFT", "symbols"),
    ("start=2024-13-01", "start"),
    ("start=20240102", "start"),
    ("end=yesterday", "end"),
    ("start=2024-03-02&end=2024-03-01", "start"),
    ("interval=1min&start=2024-03-04T10:00&end=2024-03-04T09:59", "start"),
    ("start=2024-01-02&start=2024-01-03", "start"),
    ("end=2024-01-02&end=2024-01-03", "end"),
    ("interval=2d", "interval"),
    ("interval=", "interval"),
    ("interval=1d&interval=1w", "interval"),
    ("adjustment=half", "adjustment"),
    ("adjustment=", "adjustment"),
    ("adjustment=raw&adjustment=all", "adjustment"),
    ("as_of=2024-01-01T00:00:00Z", "as_of"),  # the single-file mode keeps no history
    ("as_of=garbage", "as_of"),
    ("limit=0", "limit"),
    ("limit=1000001", "limit"),
    ("limit=ten", "limit"),
    ("limit=", "limit"),
    ("limit=5&limit=6", "limit"),
    ("page_token=", "page_token"),
    ("page_token=abc", "page_token"),
    ("page_token=a.b&page_token=c.d", "page_token"),
    ("format=xml", "format"),
    ("format=", "format"),
    ("format=csv&format=json", "format"),
]


@pytest.mark.e2e
def test_every_bad_parameter_gets_a_400_naming_it(served: str) -> None:
    session = requests.Session()
    for query, parameter in BAD:
        answer = session.get(f"{served}/bars?{query}", timeout=30)
        assert answer.status_code == 400, (query, answer.status_code, answer.text[:300])
        assert answer.headers["content-type"] == "application/json"
        assert answer.json()["parameter"] == parameter, (query, answer.json())
    for query in ("format=xml", "format=csv&format=json", "format="):
        answer = session.get(f"{served}/instruments/AAPL/ohlcv?{query}", timeout=30)
        assert answer.status_code == 400, query
        assert answer.json()["parameter"] == "format"


@pytest.mark.e2e
def test_etag_and_304_on_cached_and_streamed_pages(served: str) -> None:
    for query in ("symbols=AAPL&limit=3", "interval=1min&limit=1000"):  # cached; streamed
        first = get(served, f"/bars?{query}")
        etag = first.headers["etag"]
        assert first.headers["cache-control"] == "public, max-age=0, must-revalidate"
        for _ in range(2):
            again = get(served, f"/bars?{query}", **{"If-None-Match": etag})
            assert again.status_code == 304, query
            assert again.content == b""
        assert get(served, f"/bars?{query.lower()}").headers["etag"] == etag
        assert get(served, f"/bars?{query}&format=arrow").headers["etag"] != etag
    tags = {get(served, f"/bars?symbols=AAPL&limit={n}").headers["etag"] for n in (3, 4)}
    assert len(tags) == 2
    head = requests.head(f"{served}/bars?symbols=AAPL&limit=3", timeout=30)
    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["etag"] == get(served, "/bars?symbols=AAPL&limit=3").headers["etag"]


@pytest.mark.e2e
def test_byte_ranges_of_a_parquet_answer_rebuild_it(served: str) -> None:
    """What polars asks of a URL: a suffix range for the footer, then ranges for row groups;
    the same for an answer from the cache and one streamed past it."""
    for query in ("symbols=BRK.B&format=parquet&limit=3", "format=parquet&limit=500"):
        whole = get(served, f"/bars?{query}").content
        assert whole[:4] == b"PAR1"
        pieces = [
            get(served, f"/bars?{query}", Range=f"bytes={a}-{a + 999}")
            for a in range(0, len(whole), 1000)
        ]
        assert all(p.status_code == 206 for p in pieces), query
        assert b"".join(p.content for p in pieces) == whole
        assert (
            pieces[0].headers["content-range"] == f"bytes 0-{min(999, len(whole) - 1)}/{len(whole)}"
        )
        tail = get(served, f"/bars?{query}", Range="bytes=-8")
        assert (tail.status_code, tail.content) == (206, whole[-8:])
        beyond = get(served, f"/bars?{query}", Range=f"bytes={len(whole)}-")
        assert beyond.status_code == 416
        assert beyond.headers["content-range"] == f"bytes */{len(whole)}"
        assert pq.read_table(io.BytesIO(whole)).num_rows > 0


@pytest.mark.e2e
def test_a_load_between_pages_is_a_410_naming_page_token(dataset: Dataset, tmp_path: Path) -> None:
    with serve(dataset.home, tmp_path / "granian.log") as api:
        first = get(api.base, "/bars?symbols=AAPL,MSFT&limit=5").json()
        version = get(api.base, "/health").json()["data_version"]
        token = first["next_page_token"]
        new_bar = (datetime(2024, 5, 1), "AAPL", 1.0, 2.0, 0.5, 1.5, 10)
        load(dataset.home, [new_bar])
        wait_for(lambda: get(api.base, "/health").json()["data_version"] != version,
                 "the API sees the load", limit=30)  # fmt: skip
        gone = get(api.base, f"/bars?symbols=AAPL,MSFT&limit=5&page_token={quote(token)}")
        assert gone.status_code == 410, gone.text
        assert gone.json()["parameter"] == "page_token"
        assert "start again" in gone.json()["detail"]
        rows, _ = follow(api.base, "symbols=AAPL,MSFT", 50)
        assert ("AAPL", "2024-05-01", 1.0, 2.0, 0.5, 1.5, 10) in rows


def test_a_load_while_an_answer_streams_ends_it_as_an_error(
    dataset: Dataset, make_client: MakeClient
) -> None:
    """The batches after a load would be new data: without a page token the answer stops with
    a retryable 503's error, with one the page is gone; never a mix of old and new rows."""
    client = make_client(dataset.home, batch_rows=2)
    service = service_of(client)
    question = BulkQuestion.parse(("AAPL", "MSFT"), Interval.DAY, None, None, Adjustment.RAW)
    version = service.reader.data_version()
    answers = [
        service._bars_answer(question, question.digest(), Page(10), "json", version)
        for _ in range(2)
    ]
    for answer in answers:
        assert b'"AAPL":[{"timestamp":"2023-11-01"' in answer.first()
    load(dataset.home, [(datetime(2024, 5, 1), "AAPL", 1.0, 2.0, 0.5, 1.5, 10)])
    wait_for(lambda: service.reader.data_version() != version, "a new version", limit=30)
    with pytest.raises(StoreUnavailable, match="changed while this answer was read"):
        service._next(answers[0], pinned=False)
    with pytest.raises(VersionGone):
        service._next(answers[1], pinned=True)


def test_answers_over_the_bound_stream_past_the_cache(
    dataset: Dataset, make_client: MakeClient
) -> None:
    client = make_client(dataset.home, cache_answer_bytes=2048, batch_rows=50)
    cache = service_of(client).cache
    small = client.get("/bars?symbols=BRK.B&limit=2")
    assert len(small.content) <= 2048
    assert len(cache) == 1
    for path in ("/bars?limit=1000000", "/bars?format=arrow", "/instruments/AAPL/ohlcv"):
        large = client.get(path)
        assert large.status_code == 200
        assert len(large.content) > 2048
        assert len(cache) == 1, path  # served, never kept
        assert client.get(path, headers={"If-None-Match": large.headers["etag"]}).status_code == 304
    page = client.get("/bars?limit=1000000").json()
    assert sum(map(len, page["bars"].values())) == sum(map(len, dataset.rows.values()))


def test_settings_of_bulk_reads() -> None:
    settings = Settings.from_env(
        {"MARKET_API_CACHE_ANSWER_BYTES": "2_048", "MARKET_API_BATCH_ROWS": "100",
         "MARKET_API_TOKEN_SECRET": "  sixteen-chars-at-least  "}
    )  # fmt: skip
    assert (settings.cache_answer_bytes, settings.batch_rows) == (2048, 100)
    assert settings.token_secret == "sixteen-chars-at-least"
    assert "sixteen" not in repr(settings)
    assert Settings.from_env({}).token_secret is None
    with pytest.raises(SettingsError, match="MARKET_API_TOKEN_SECRET") as refused:
        Settings.from_env({"MARKET_API_TOKEN_SECRET": "short-secret"})
    assert "short-secret" not in str(refused.value)
    with pytest.raises(SettingsError, match="MARKET_API_BATCH_ROWS"):
        Settings.from_env({"MARKET_API_BATCH_ROWS": "0"})


def test_the_key_file_is_made_once_and_read_by_every_replica(tmp_path: Path) -> None:
    home = DataHome(tmp_path / "home")
    keys: list[bytes] = []
    threads = [threading.Thread(target=lambda: keys.append(signing_key(None, home)))
               for _ in range(8)]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(keys)) == 1 and len(keys) == 8
    assert [p.name for p in home.state_dir.iterdir()] == [KEY_FILE]
    shared = replace(home, shared=tmp_path / "shared")
    elsewhere = replace(DataHome(tmp_path / "other"), shared=tmp_path / "shared")
    assert signing_key(None, shared) == signing_key(None, elsewhere) != keys[0]
    assert signing_key("x" * 20, home) == signing_key("x" * 20, elsewhere) != keys[0]


def test_tokens_are_bound_to_their_key_and_their_query() -> None:
    signer = TokenSigner(b"k" * 32)
    token = PageToken("v1", "q" * 32, ("BRK.B", datetime(2024, 3, 4, 9, 30)))
    text = signer.sign(token)
    assert signer.verify(text, "q" * 32) == token
    assert "BRK" not in text  # opaque, if not secret
    for key, query, parameter in (
        (b"o" * 32, "q" * 32, "not one"),
        (b"k" * 32, "r" * 32, "another"),
    ):
        with pytest.raises(InvalidParameter, match=parameter) as refused:
            TokenSigner(key).verify(text, query)
        assert refused.value.parameter == "page_token"


def test_symbol_spans_hold_at_most_a_batch_and_the_page_ends_where_the_limit_does() -> None:
    counts = [("A", 3), ("B", 4), ("C", 1), ("D", 9), ("E", 2), ("F", 2), ("G", 0)]
    spans = [Span(("A", "B"), 7), Span(("C",), 1), Span(("D",), 9), Span(("E", "F"), 4)]
    assert plan(counts, None, 7) == (spans, None)
    assert plan(counts, 21, 7) == (spans, None)  # exactly every bar: no next page
    assert plan([], 7, 7) == ([], None)
    assert plan(counts, 100, 100) == ([Span(("A", "B", "C", "D", "E", "F"), 21)], None)
    cut = Span(("C", "D"), 3, whole=False)  # D cut: read in order, a LIMIT where it ends
    assert plan(counts, 10, 7) == ([Span(("A", "B"), 7), cut], ("D", 2))
    assert plan(counts, 8, 7) == ([Span(("A", "B"), 7), Span(("C",), 1)], ("C", 1))
    assert plan(counts, 3, 7) == ([Span(("A",), 3)], ("A", 3))


@pytest.mark.parametrize(
    "moments",
    [
        pa.array([date(2024, 1, day) for day in range(1, 11)], pa.date32()),
        pa.array(
            [datetime(2024, 3, 4, 9, 30 + m) for m in range(10)],
            pa.timestamp("us", tz="America/New_York"),
        ),
        pa.array(
            [datetime(1, 1, 1), *(datetime(9999, 1, d) for d in range(1, 10))], pa.timestamp("us")
        ),  # too wide for one int64 key: lexsort
    ],
)
def test_in_key_order_sorts_any_rows_and_keeps_ordered_ones(moments: pa.Array) -> None:
    symbols = [f"S{n:02d}" for n in range(40)]
    keys = [(s, i) for s in symbols for i in range(len(moments))]
    table = pa.table(
        {
            "symbol": [s for s, _ in keys],
            "timestamp": moments.take([i for _, i in keys]),
            "volume": list(range(len(keys))),
        }
    )
    assert in_key_order(table) is table
    rows = list(range(table.num_rows))
    shuffled = table.take(rows[1::2][::-1] + rows[::2])  # the odd rows backwards, then the even
    assert not is_key_ordered(shuffled)
    assert in_key_order(shuffled).equals(table)
    chunked = pa.Table.from_batches(shuffled.to_batches(max_chunksize=7))
    assert in_key_order(chunked).combine_chunks().equals(table)


def test_byte_ranges() -> None:
    assert parse_range(b"bytes=-262144") == ByteRange(None, None, 262144)
    assert parse_range(b"bytes=5-") == ByteRange(5, None)
    assert parse_range(b"bytes=5-9") == ByteRange(5, 9)
    for ignored in (None, b"", b"bytes=9-5", b"bytes=0-1,4-5", b"items=0-1", b"bytes=-"):
        assert parse_range(ignored) is None
    body = bytes(range(100)) * 3
    for wanted in (ByteRange(None, None, 7), ByteRange(250, None), ByteRange(3, 260),
                   ByteRange(0, 0), ByteRange(None, None, 1000)):  # fmt: skip
        slicer = RangeSlicer(wanted)
        for at in range(0, len(body), 13):
            slicer.feed(body[at : at + 13])
        span = wanted.resolve(len(body))
        assert span is not None
        assert slicer.result() == (*span, body[span[0] : span[1] + 1])
    assert ByteRange(300, None).resolve(300) is None
    assert ByteRange(None, None, 0).resolve(300) is None


def test_month_counts_bound_each_symbol_s_bars_and_follow_the_data_version() -> None:
    conn = duckdb.connect(":memory:")
    conn.execute(CREATE_TABLE_SQL)
    conn.execute(
        f"INSERT INTO {TABLE} SELECT d, s, 1, 1, 1, 1, 1 FROM "
        "range(TIMESTAMP '2024-01-01', TIMESTAMP '2024-04-01', INTERVAL 1 DAY) AS t(d), "
        "(VALUES ('A'), ('B')) AS v(s) WHERE s = 'A' OR d >= TIMESTAMP '2024-02-01'"
    )
    months = MonthCounts()

    def bounds(start: date, end: date, after: Key | None = None) -> list[tuple[str, int]]:
        question = BulkQuestion.parse(None, Interval.DAY, start, end, Adjustment.RAW)
        return months.bounds(conn, question, "v1", after)

    assert bounds(date(2024, 1, 1), date(2024, 3, 31)) == [("A", 91), ("B", 60)]
    assert bounds(date(2024, 1, 10), date(2024, 2, 3)) == [("A", 60), ("B", 29)]  # >= 25, 3
    assert bounds(date(2024, 1, 1), date(2024, 3, 31), ("A", datetime(2024, 3, 2))) == [
        ("A", 31), ("B", 60),
    ]  # fmt: skip
    assert bounds(date(2024, 1, 1), date(2024, 3, 31), ("B", datetime(2024, 2, 2))) == [("B", 60)]
    conn.execute(f"DELETE FROM {TABLE} WHERE symbol = 'A'")
    assert bounds(date(2024, 1, 1), date(2024, 3, 31))[0] == ("A", 91)  # same version, kept
    question = BulkQuestion.parse(None, Interval.DAY, None, None, Adjustment.RAW)
    assert months.bounds(conn, question, "v2", None) == [("B", 60)]
