"""The symbol-ordered copy of the daily bars (``market_api.bars.by_symbol``): what it answers
is what the store answers, byte for byte, in every format, page after page.

The in-process tests read batches through ``BarBatches`` twice, from the store and from the
copy, over stores loaded in key order and out of it; the served ones run two APIs on one data
home, one reading the copy and one never building it, and compare their bodies. A load between
pages is still a 410, and a new data version gets a copy of its own while the old file goes.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests

from market_api.bars.bulk import BarBatches, BulkQuestion, Key, MonthCounts, Page
from market_api.bars.by_symbol import FOLDER, SymbolCopy, SymbolOrdered, suits
from market_api.bars.pages import page_writer
from market_api.bars.schemas import Adjustment, Interval
from market_api.readers.errors import StoreUnavailable, VersionGone
from market_api.settings import Settings
from market_core.home import DataHome
from market_core.schema import CREATE_TABLE_SQL, TABLE
from tests.api.conftest import Dataset, MakeClient, service_of
from tests.api.test_bulk_bars import LAYOUTS, UNORDERED_BARS, follow, rows_of
from tests.api.test_handoff import wait_for
from tests.api.test_intraday import copy_home
from tests.api.writer import Row as StoredRow
from tests.api.writer import load
from tests.served_api import serve

MAX_PAGES = 2000
COPY = "*-????????.arrow"
"""A finished copy's file name (a copy being built ends in ``.building.arrow``)."""
NEW_BAR: StoredRow = (datetime(2024, 5, 1), "AAPL", 1.0, 2.0, 0.5, 1.5, 10)

Store = Callable[[Callable[[duckdb.DuckDBPyConnection], Any]], Any]


def question(
    symbols: tuple[str, ...] | None, start: str | None = None, end: str | None = None
) -> BulkQuestion:
    return BulkQuestion.parse(
        symbols,
        Interval.DAY,
        None if start is None else date.fromisoformat(start),
        None if end is None else date.fromisoformat(end),
        Adjustment.RAW,
    )


QUESTIONS = [
    question(None),  # the whole market
    question(("AAA", "CC.D", "ZZZ"), "2024-01-15", "2024-03-10"),  # a basket, cut mid-symbol
    question(None, "2024-02-26", "2024-03-06"),  # every symbol, a window inside each
    question(("BBB", "LONG"), None, "2024-02-02"),  # LONG: a batch of its own in the copy
    question(("DDD", "NOPE", "ZZZ"), "2024-03-01"),  # DDD ends before the window
    question(None, "2030-01-01", "2030-12-31"),  # no bars at all
]


@pytest.fixture(scope="module")
def layout_homes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, DataHome]:
    """The bars of ``test_bulk_bars``'s layouts, one data home per layout."""
    homes: dict[str, DataHome] = {}
    for number, (name, loads) in enumerate(LAYOUTS.items()):
        homes[name] = DataHome(tmp_path_factory.mktemp(f"by-symbol-{number}") / "home")
        for rows in loads(UNORDERED_BARS):
            load(homes[name], rows)
    return homes


@contextlib.contextmanager
def store_of(path: Path) -> Iterator[Store]:
    conn = duckdb.connect(str(path), read_only=True)

    def store(query: Callable[[duckdb.DuckDBPyConnection], Any]) -> Any:
        return query(conn.cursor())

    try:
        yield store
    finally:
        conn.close()


@contextlib.contextmanager
def built(folder: Path, store: Store, version: str = "v1", **options: int) -> Iterator[SymbolCopy]:
    """A copy of ``store`` in ``folder``, closed (its file removed) on the way out."""
    ordered = SymbolOrdered(folder, **options)
    try:
        ordered.want(version, store)
        wait_for(lambda: ordered.copy_of(version) is not None, "the copy", limit=30)
        copy = ordered.copy_of(version)
        assert copy is not None
        yield copy
    finally:
        ordered.close()


def body(fmt: str, tables: list[pa.Table]) -> bytes:
    writer = page_writer(fmt, Interval.DAY, Adjustment.RAW, with_symbol=True)  # type: ignore[arg-type]
    return b"".join([writer.head(), *(writer.encode(t) for t in tables), writer.tail(None, ())])


def pages(
    store: Store,
    asked: BulkQuestion,
    limit: int,
    batch_rows: int,
    copy: SymbolCopy | None,
) -> list[tuple[bytes, bytes, Key | None]]:
    """Every page of ``asked`` at ``limit``, each as its Arrow and JSON bodies and its end,
    read as the service reads a page (bounds from ``MonthCounts``), from ``copy`` if given."""
    months = MonthCounts()
    found: list[tuple[bytes, bytes, Key | None]] = []
    after: Key | None = None
    for _ in range(MAX_PAGES):

        def bounds(key: Key | None) -> list[tuple[str, int]]:
            return store(lambda cur: months.bounds(cur, asked, "v1", key))

        source = None if copy is None else partial(copy.read, asked)
        batches = BarBatches(store, asked, Page(limit, after), batch_rows, None, bounds, source)
        tables = list(batches)
        found.append((body("arrow", tables), body("json", tables), batches.end))
        if batches.end is None:
            return found
        after = batches.end
    raise AssertionError("more than MAX_PAGES pages")


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_batches_read_from_the_copy_are_the_store_s_byte_for_byte(
    layout_homes: dict[str, DataHome], layout: str, tmp_path: Path
) -> None:
    """Baskets, the whole market, windows cut inside symbols, pages of every size followed to
    the end, spans of several symbols and a symbol of several batches; stores loaded out of
    order; a copy of many small record batches (``chunk_rows``)."""
    home = layout_homes[layout]
    with store_of(home.duckdb_path) as store, built(tmp_path, store, chunk_rows=100) as copy:
        for asked in QUESTIONS:
            assert suits(asked)
            for limit, batch_rows in ((3, 7), (7, 7), (101, 100), (250, 100), (10**6, 7)):
                expected = pages(store, asked, limit, batch_rows, None)
                assert pages(store, asked, limit, batch_rows, copy) == expected, (
                    asked, limit, batch_rows,
                )  # fmt: skip
        whole = pages(store, QUESTIONS[0], 10**6, 10**6, copy)
        assert len(whole) == 1 and whole[0][0].count(b"LONG") > 0


def test_the_copy_answers_only_daily_unadjusted_questions_of_the_newest_data() -> None:
    assert suits(question(("AAPL",), "2024-01-01"))
    for other in (
        BulkQuestion.parse(None, Interval.WEEK, None, None, Adjustment.RAW),
        BulkQuestion.parse(None, Interval.MIN5, None, None, Adjustment.RAW),
        BulkQuestion.parse(None, Interval.DAY, None, None, Adjustment.SPLIT),
        BulkQuestion.parse(None, Interval.DAY, None, None, Adjustment.RAW, datetime(2024, 1, 1)),
    ):
        assert not suits(other)


def mapping_of(path: Path) -> tuple[int, int, int]:
    """The address range of this process's mapping of ``path`` and its resident bytes."""
    with open("/proc/self/smaps", encoding="utf-8") as smaps:
        lines = smaps.read().splitlines()
    for at, line in enumerate(lines):
        if line.endswith(str(path)):
            low, high = (int(part, 16) for part in line.split()[0].split("-"))
            rss = next(int(x.split()[1]) for x in lines[at + 1 :] if x.startswith("Rss:"))
            return low, high, rss * 1024
    raise AssertionError(f"{path} is not mapped")


def test_a_read_owns_its_memory_and_hands_the_mapped_pages_back(tmp_path: Path) -> None:
    """What keeps a server's memory at a batch: the table read is a copy, and the pages of the
    mapped file it came from are no longer resident once it is read."""
    path = tmp_path / "store.duckdb"
    with duckdb.connect(str(path)) as conn:
        conn.execute(CREATE_TABLE_SQL)
        conn.execute(
            f"INSERT INTO {TABLE} SELECT TIMESTAMP '2000-01-03' + INTERVAL (d) DAY, "
            "'S' || lpad(CAST(s AS VARCHAR), 3, '0'), s + d, s + d + 1, s + d - 1, s + d, d "
            "FROM range(60) AS a(s), range(2000) AS b(d)"
        )
    with store_of(path) as store, built(tmp_path / FOLDER, store, chunk_rows=10_000) as copy:
        (held,) = (tmp_path / FOLDER).glob(COPY)
        size = held.stat().st_size
        every = question(None)
        table = copy.read(every, None, None, 10**6)
        assert table.num_rows == 120_000
        low, high, resident = mapping_of(held)
        assert high - low >= size
        assert resident < size / 10, (resident, size)
        for column in table.columns:
            for buffer in column.chunk(0).buffers():
                assert buffer is None or not low <= buffer.address < high
        one = copy.read(question(("S007",)), None, None, 10**6)  # one piece: still a copy
        assert one.num_rows == 2000
        assert all(
            b is None or not low <= b.address < high
            for column in one.columns
            for b in column.chunk(0).buffers()
        )
        sums = f"SELECT sum(volume), sum(open) FROM {TABLE} WHERE symbol = 'S007'"
        expected = store(lambda cur: cur.execute(sums).fetchone())
        assert (sum(one.column("volume").to_pylist()), sum(one.column("open").to_pylist())) == (
            expected
        )


def test_a_new_version_gets_its_copy_and_the_old_file_goes(
    layout_homes: dict[str, DataHome], tmp_path: Path
) -> None:
    folder = tmp_path / FOLDER
    folder.mkdir()
    orphans = [folder / f"{os.getpid()}-0123abcd.arrow",  # a restarted container's
               folder / "999999999-0123abcd.building.arrow"]  # fmt: skip
    for orphan in orphans:
        orphan.write_bytes(b"left behind")
    other = folder / f"{os.getppid()}-0123abcd.arrow"  # a live process's: kept
    other.write_bytes(b"another API's")
    ordered = SymbolOrdered(folder)
    with store_of(layout_homes["key order"].duckdb_path) as store:
        try:
            ordered.want("v1", store)
            wait_for(lambda: ordered.copy_of("v1") is not None, "the copy of v1", limit=30)
            assert not any(orphan.exists() for orphan in orphans)
            assert other.exists()
            (first,) = set(folder.glob(COPY)) - {other}
            old = ordered.copy_of("v1")
            assert old is not None
            ordered.want("v2", store)
            wait_for(lambda: ordered.copy_of("v2") is not None, "the copy of v2", limit=30)
            assert ordered.copy_of("v1") is None
            (second,) = set(folder.glob(COPY)) - {other}
            assert second != first and not first.exists()
            new = ordered.copy_of("v2")
            assert new is not None
            every = question(None)  # an answer under way reads on from the old file, unlinked
            assert old.read(every, None, None, 10**6).equals(new.read(every, None, None, 10**6))
        finally:
            ordered.close()
    assert set(folder.iterdir()) == {other}


def test_a_small_store_or_bars_off_midnight_get_no_copy(
    layout_homes: dict[str, DataHome], tmp_path: Path
) -> None:
    """Below ``min_bars``, and for a store holding a daily bar whose timestamp is not a
    midnight (whose date alone cannot say how the store compares it), the store answers."""
    off = DataHome(tmp_path / "off")
    load(off, [*UNORDERED_BARS[:50], (datetime(2024, 3, 4, 10, 0), "AAA", 1.0, 2.0, 0.5, 1.5, 1)])
    cases = [(layout_homes["key order"], len(UNORDERED_BARS) + 1), (off, 0)]
    for number, (home, min_bars) in enumerate(cases):
        folder = tmp_path / f"copies-{number}"
        ordered = SymbolOrdered(folder, min_bars=min_bars)
        with store_of(home.duckdb_path) as store:
            try:
                ordered.want("v1", store)
                wait_for(lambda: not building(), "the build ends", limit=30)
                ordered.want("v1", store)  # asked again: not tried again
                wait_for(lambda: not building(), "no second try", limit=30)
                assert ordered.copy_of("v1") is None
                assert not (folder.exists() and list(folder.glob("*.arrow")))
            finally:
                ordered.close()


def building() -> bool:
    return any(t.name == "market-api-by-symbol" for t in threading.enumerate())


def test_the_setting() -> None:
    assert Settings.from_env({}).by_symbol_min_bars == 1_000_000
    assert Settings.from_env({"MARKET_API_BY_SYMBOL_MIN_BARS": "0"}).by_symbol_min_bars == 0


# Served: two APIs on one data home, the copy's and the store's.


def get(base: str, path: str) -> requests.Response:
    answer = requests.get(f"{base}{path}", timeout=30)
    assert answer.status_code == 200, (path, answer.status_code, answer.text[:300])
    return answer


@contextlib.contextmanager
def served_pair(home: DataHome, log_dir: Path, batch_rows: str) -> Iterator[tuple[str, str]]:
    """(the API reading the copy once it is built, the API that never builds one)."""
    settings = {"MARKET_API_BATCH_ROWS": batch_rows, "MARKET_API_CACHE_ANSWER_BYTES": "0"}
    with (
        serve(home, log_dir / "copy.log", MARKET_API_BY_SYMBOL_MIN_BARS="0", **settings) as copy,
        serve(home, log_dir / "store.log", MARKET_API_BY_SYMBOL_MIN_BARS="10000000000",
              **settings) as store,
    ):  # fmt: skip
        folder = home.root / FOLDER
        get(store.base, "/bars?limit=1")  # asks for no copy: the bound is above the store
        get(copy.base, "/bars?limit=1")  # starts the build
        wait_for(lambda: any(folder.glob(COPY)), "the copy", limit=30)
        assert len(list(folder.glob(COPY))) == 1
        yield copy.base, store.base


SERVED_QUERIES = [
    "",
    "symbols=msft,AAPL,brk.b",
    "symbols=AAPL,BRK.B&start=2024-02-20&end=2024-04-02",
    "start=2023-12-20&end=2024-03-05",
    "symbols=ZZZ,MSFT,NOPE&start=2024-01-01",
    "start=2030-01-01",
]
FORMATS = ["json", "arrow", "csv", "parquet"]


@pytest.fixture(scope="module")
def pair(template: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """AAPL, MSFT and BRK.B (AAPL with a two-week gap), batches of 7 bars."""
    root = tmp_path_factory.mktemp("by-symbol-served")
    home = copy_home(template, root / "home")
    with served_pair(home, root, "7") as bases:
        yield bases


@pytest.mark.e2e
def test_served_answers_from_the_copy_are_the_store_s_byte_for_byte(
    pair: tuple[str, str],
) -> None:
    copy, store = pair
    for query in SERVED_QUERIES:
        for fmt in FORMATS:
            path = f"/bars?{query}&format={fmt}&limit=1000000"
            assert get(copy, path).content == get(store, path).content, path
    for fmt in ("arrow", "parquet"):
        path = f"/instruments/AAPL/ohlcv?start=2024-01-10&format={fmt}"
        assert get(copy, path).content == get(store, path).content, path
    arrow = get(copy, "/bars?format=arrow&limit=1000000").content
    assert pa.ipc.open_stream(arrow).read_all().num_rows > 7
    assert pq.read_table(io.BytesIO(get(copy, "/bars?format=parquet").content)).num_rows > 7


@pytest.mark.e2e
def test_served_pages_followed_to_the_end_are_the_store_s(pair: tuple[str, str]) -> None:
    """Every page's body (its next page's token included) and ``Next-Page-Token`` header."""
    copy, store = pair
    for query in SERVED_QUERIES[:4]:
        bars = len(rows_of(get(store, f"/bars?{query}&limit=1000000").json()))
        for limit, fmt in ((3, "json"), (8, "arrow"), (40, "json"), (101, "csv")):
            more, pages = "", 0
            while pages < MAX_PAGES:
                pages += 1
                path = f"/bars?{query}&limit={limit}&format={fmt}{more}"
                mine, theirs = get(copy, path), get(store, path)
                assert mine.content == theirs.content, path
                token = mine.headers.get("next-page-token")
                assert token == theirs.headers.get("next-page-token")
                if token is None:
                    break
                more = f"&page_token={quote(token)}"
            assert pages == -(-bars // limit), (query, limit)


OUT_OF_ORDER_QUERIES = [
    "",
    "symbols=zzz,AAA,cc.d&start=2024-01-15&end=2024-03-10",
    "symbols=LONG,BBB&end=2024-02-02",
    "start=2024-02-26&end=2024-03-06",
]


@pytest.mark.e2e
@pytest.mark.parametrize("layout", ["daily increments", "symbols in any order"])
def test_served_answers_of_a_store_loaded_out_of_order(
    layout_homes: dict[str, DataHome], layout: str, tmp_path: Path
) -> None:
    with served_pair(layout_homes[layout], tmp_path, "100") as (copy, store):
        for query in OUT_OF_ORDER_QUERIES:
            for fmt in ("arrow", "json"):
                path = f"/bars?{query}&format={fmt}&limit=1000000"
                assert get(copy, path).content == get(store, path).content, path
            rows, _ = follow(copy, query, 101)
            assert rows == rows_of(get(store, f"/bars?{query}&limit=1000000").json())


@pytest.mark.e2e
def test_a_load_between_pages_is_a_410_and_the_new_version_gets_a_new_copy(
    dataset: Dataset, tmp_path: Path
) -> None:
    folder = dataset.home.root / FOLDER
    with serve(dataset.home, tmp_path / "granian.log", MARKET_API_BY_SYMBOL_MIN_BARS="0",
               MARKET_API_BATCH_ROWS="7") as api:  # fmt: skip
        get(api.base, "/bars?limit=1")
        wait_for(lambda: any(folder.glob(COPY)), "the copy", limit=30)
        (first,) = folder.glob(COPY)
        query = "symbols=AAPL,MSFT&start=2024-01-01&limit=50"
        page = get(api.base, f"/bars?{query}").json()
        token = page["next_page_token"]
        assert token is not None
        version = get(api.base, "/health").json()["data_version"]
        load(dataset.home, [NEW_BAR])
        wait_for(lambda: get(api.base, "/health").json()["data_version"] != version,
                 "the API sees the load", limit=30)  # fmt: skip
        gone = requests.get(f"{api.base}/bars?{query}&page_token={quote(token)}", timeout=30)
        assert gone.status_code == 410, gone.text
        assert gone.json()["parameter"] == "page_token"
        get(api.base, "/bars?limit=1")  # a question at the new version: its copy is built
        wait_for(lambda: not first.exists() and any(folder.glob(COPY)), "a new copy", limit=30)
        (second,) = folder.glob(COPY)
        assert second != first
        rows, _ = follow(api.base, "symbols=AAPL,MSFT&start=2024-01-01", 50)
        assert ("AAPL", "2024-05-01", 1.0, 2.0, 0.5, 1.5, 10) in rows
        assert rows[-1] == ("MSFT", "2024-03-28", *rows[-1][2:])
    assert not list(folder.iterdir())  # the API removes its copy when it stops


def test_a_load_while_an_answer_streams_from_the_copy_ends_it_as_an_error(
    dataset: Dataset, make_client: MakeClient
) -> None:
    """The copy's batches check the store's version as the store's queries do: without a page
    token the answer stops with a retryable 503's error, with one the page is gone."""
    client = make_client(dataset.home, batch_rows=2, by_symbol_min_bars=0)
    service = service_of(client)
    version = service.reader.data_version()
    assert client.get("/bars?limit=1").status_code == 200
    wait_for(lambda: service.ordered.copy_of(version) is not None, "the copy", limit=30)
    asked = question(("AAPL", "MSFT"))
    store = service._pinned(version, None)
    assert service._by_symbol_source(asked, version, store) is not None
    answers = [
        service._bars_answer(asked, asked.digest(), Page(10), "json", version) for _ in range(2)
    ]
    for answer in answers:
        assert b'"AAPL":[{"timestamp":"2023-11-01"' in answer.first()
    load(dataset.home, [NEW_BAR])
    wait_for(lambda: service.reader.data_version() != version, "a new version", limit=30)
    with pytest.raises(StoreUnavailable, match="changed while this answer was read"):
        service._next(answers[0], pinned=False)
    with pytest.raises(VersionGone):
        service._next(answers[1], pinned=True)
    assert service._by_symbol_source(asked, version, store) is None  # not the newest
    newest = service.reader.data_version()
    assert service._by_symbol_source(asked, newest, service._pinned(newest, None)) is None
    wait_for(lambda: service.ordered.copy_of(newest) is not None, "the new copy", limit=30)


def test_days_before_the_epoch_and_open_windows(tmp_path: Path) -> None:
    """Days are counted from 1970 in the copy: bars before it, and windows open at either
    end or reaching the last representable day, read as the store reads them."""
    home = DataHome(tmp_path / "home")
    start = datetime(1969, 12, 1)
    rows: list[StoredRow] = [
        (start + timedelta(days=d), symbol, 1.0 + d, 2.0 + d, 0.5, 1.5 + d, d)
        for symbol in ("OLD", "NEW")
        for d in range(0, 90, 3)
    ]
    load(home, rows)
    with store_of(home.duckdb_path) as store, built(tmp_path / FOLDER, store) as copy:
        for asked in (question(None), question(None, "1969-12-31", "1970-01-02"),
                      question(("OLD",), None, "1969-12-31"), question(None, "1970-01-01"),
                      question(None, "1969-01-01", "9999-12-31")):  # fmt: skip
            for limit in (1, 4, 10**6):
                assert pages(store, asked, limit, 5, copy) == pages(store, asked, limit, 5, None)
