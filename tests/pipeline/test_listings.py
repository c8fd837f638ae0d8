"""LISTING_STATUS through the real client against the live stub and the offline sample, into
the listings table of a real DuckDB file.

The wire format (a CSV header, ``null`` dates, ``Active``/``Delisted``, the odd entries that are
no ticker), the rejects with their rule, a reused ticker kept as two rows, and a bad answer that
leaves the last good listing (files and table) as it was.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest
import requests
from dagster import DagsterInstance, materialize

from market_core.exchange import EXCHANGE_TZ
from market_core.home import DataHome
from market_pipeline.defs.listings import listings
from market_pipeline.defs.resources import resources_from_env
from market_pipeline.listings.clean import ListingAnswerError, refresh_listings
from market_pipeline.listings.rules import REJECT_RULES
from market_pipeline.source.client import AlphaVantageClient
from market_pipeline.source.errors import (
    AlphaVantageError,
    DailyQuotaError,
    MalformedResponseError,
    RetryableError,
)
from market_pipeline.source.sample import LISTINGS, SAMPLE_BASE_URL, SampleAdapter, listing_csv
from market_pipeline.store.duckdb_file import DuckDBFileStore
from market_pipeline.store.listings import FileListings, ListingsTable, listings_table
from tests.conftest import TEST_KEY
from tests.pipeline.helpers import failure_text, snapshot
from tests.stubs.alpha_vantage import AlphaVantageStub

HEADER = "symbol,name,exchange,assetType,ipoDate,delistingDate,status"
GOOD = [
    ("AAPL", "Apple Inc", "NASDAQ", "Stock", "1980-12-12", "null", "Active"),
    ("IBM", "International Business Machines Corp", "NYSE", "Stock", "1962-01-02", "null",
     "Active"),
    ("MSFT", "Microsoft Corporation", "NASDAQ", "Stock", "1986-03-13", "null", "Active"),
    ("SPY", "SPDR S&P 500 ETF Trust", "NYSE ARCA", "ETF", "1993-01-29", "null", "Active"),
    ("XOM", "Exxon Mobil Corp", "NYSE", "Stock", "1978-01-13", "null", "Active"),
]  # fmt: skip


@pytest.fixture
def client(home: DataHome, stub: AlphaVantageStub) -> Iterator[AlphaVantageClient]:
    made = AlphaVantageClient(
        home=home, api_key=TEST_KEY, base_url=stub.url, requests_per_second=0,
        requests_per_minute=0, requests_per_day=0, timeout_seconds=1.0, max_attempts=3,
        backoff_seconds=0.01,
    )  # fmt: skip
    yield made
    made.close()


@pytest.fixture
def table(home: DataHome) -> ListingsTable:
    return listings_table(DuckDBFileStore(home.duckdb_path, home=home))


def stored(home: DataHome) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(home.duckdb_path), read_only=True) as conn:
        return conn.execute("SELECT * FROM listings ORDER BY symbol, ipo_date").fetchall()


def rejects(home: DataHome, state: str) -> dict[str, str]:
    frame = pl.read_parquet(home.listings_rejects_file(state))
    return dict(frame.select("symbol", "reason").iter_rows())


def files(home: DataHome) -> list[Path]:
    states = ("active", "delisted")
    return [home.raw_listings_file(s) for s in states] + [
        home.listings_rejects_file(s) for s in states
    ]


def test_the_sample_answers_in_the_vendors_exact_wire_format() -> None:
    session = requests.Session()
    session.mount(SAMPLE_BASE_URL, SampleAdapter())
    bodies = {}
    for state in ("active", "delisted"):
        response = session.get(SAMPLE_BASE_URL, params={"function": "LISTING_STATUS",
                                                        "state": state})  # fmt: skip
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "application/x-download"
        bodies[state] = response.text
        assert response.text.startswith(HEADER + "\r\n") and response.text.endswith("\r\n")
    active = list(csv.reader(io.StringIO(bodies["active"])))[1:]
    delisted = list(csv.reader(io.StringIO(bodies["delisted"])))[1:]
    assert {row[6] for row in active} == {"Active"} and {row[6] for row in delisted} == {"Delisted"}
    assert {row[5] for row in active} == {"null"}, "no date is the literal null"
    assert all(row[5] != "null" for row in delisted)
    symbols = [row[0] for row in active + delisted]
    assert {"NEE 6.219", "SO 6.75 08-01-22", "CHNG 6"} <= set(symbols), "the odd real entries"
    reused = {row[0] for row in active} & {row[0] for row in delisted}
    assert reused == {"AAC"}, "one ticker reused by a later company"
    assert len(active) == len(LISTINGS["active"]) and len(delisted) == len(LISTINGS["delisted"])


def test_the_stub_answers_the_samples_listing_and_records_the_state(
    stub: AlphaVantageStub,
) -> None:
    for state in ("active", "delisted"):
        response = requests.get(stub.url, params={"function": "LISTING_STATUS", "state": state,
                                                  "apikey": TEST_KEY}, timeout=5)  # fmt: skip
        assert response.headers["Content-Type"] == "application/x-download"
        assert response.text == listing_csv(state), "the sample's listing, byte for byte"
    assert [(r.function, r.state) for r in stub.requests] == [
        ("LISTING_STATUS", "active"), ("LISTING_STATUS", "delisted")
    ]  # fmt: skip


def test_the_asset_loads_both_answers_as_received_and_rejects_the_odd_entries(
    keyed: AlphaVantageStub, instance: DagsterInstance, home: DataHome
) -> None:
    result = materialize([listings], instance=instance, resources=resources_from_env())
    assert result.success
    assert [(r.function, r.state, r.apikey) for r in keyed.requests] == [
        ("LISTING_STATUS", "active", TEST_KEY), ("LISTING_STATUS", "delisted", TEST_KEY)
    ]  # fmt: skip

    raw = pl.read_parquet(home.raw_listings_file("active"))
    assert raw.columns[:7] == HEADER.split(",")
    assert raw.height == len(LISTINGS["active"])
    nee = raw.filter(pl.col("symbol") == "NEE 6.219").row(0, named=True)
    assert (nee["delistingDate"], nee["status"], nee["fields"]) == ("null", "Active", 7)
    assert TEST_KEY not in raw.get_column("source")[0]

    assert rejects(home, "active") == {"NEE 6.219": "bad_symbol", "SO 6.75 08-01-22": "bad_symbol"}
    assert rejects(home, "delisted") == {"CHNG 6": "bad_symbol"}
    rows = stored(home)
    assert len(rows) == len(LISTINGS["active"]) + len(LISTINGS["delisted"]) - 3
    today = dt.datetime.now(EXCHANGE_TZ).date()
    ibm = next(r for r in rows if r[0] == "IBM")
    assert ibm[1:7] == ("International Business Machines Corp", "NYSE", "Stock",
                        dt.date(1962, 1, 2), None, "active")  # fmt: skip
    assert abs((ibm[7] - today).days) <= 1 and ibm[7] == ibm[8], "first and last seen: today"
    yhoo = next(r for r in rows if r[0] == "YHOO")
    assert (yhoo[5], yhoo[6]) == (dt.date(2017, 6, 16), "delisted")

    metadata = result.asset_materializations_for_node("listings")[0].metadata
    assert metadata["rejected"].value == 3 and metadata["inserted"].value == len(rows)


def test_a_reused_ticker_is_a_second_row_not_an_overwrite(
    keyed: AlphaVantageStub, client: AlphaVantageClient, home: DataHome, table: ListingsTable
) -> None:
    refresh_listings(client, home, table)
    aac = [r for r in stored(home) if r[0] == "AAC"]
    assert [(r[1], r[4], r[5], r[6]) for r in aac] == [
        ("AAC Holdings Inc", dt.date(2014, 10, 2), dt.date(2020, 1, 14), "delisted"),
        ("Ares Acquisition Corporation - Class A", dt.date(2021, 3, 25), None, "active"),
    ]
    again = refresh_listings(client, home, table)
    assert (again.stats.inserted, again.stats.updated) == (0, 0), "an identical reload"
    assert [r for r in stored(home) if r[0] == "AAC"] == aac


def frame(rows: list[tuple[Any, ...]]) -> pl.DataFrame:
    columns = ("symbol", "name", "exchange", "asset_type", "ipo_date", "delisting_date",
               "status", "first_seen", "last_seen")  # fmt: skip
    return pl.DataFrame(rows, schema=columns, orient="row")


def test_a_later_load_keeps_first_seen_moves_last_seen_and_takes_the_new_status(
    home: DataHome,
) -> None:
    table = FileListings(DuckDBFileStore(home.duckdb_path, home=home))
    ipo, week1, week2 = dt.date(2013, 11, 7), dt.date(2022, 11, 1), dt.date(2022, 11, 8)
    first = table.load(frame([("TWTR", "Twitter Inc", "NYSE", "Stock", ipo, None, "active",
                               week1, week1)]))  # fmt: skip
    later = table.load(frame([("TWTR", "Twitter Inc", "NYSE", "Stock", ipo, week2, "delisted",
                               week2, week2)]))  # fmt: skip
    assert (first.inserted, later.inserted, later.updated) == (1, 0, 1)
    assert stored(home) == [
        ("TWTR", "Twitter Inc", "NYSE", "Stock", ipo, week2, "delisted", week1, week2)
    ]
    older = table.load(frame([("TWTR", "Twitter Inc", "NYSE", "Stock", ipo, week2, "delisted",
                               week1, week1)]))  # fmt: skip
    assert older.updated == 0, "an older answer of the same values changes nothing"
    read = table.read()
    assert read is not None and read.row(0)[7:] == (week1, week2)


def test_rows_that_break_a_rule_go_to_the_rejects_with_the_first_rule(
    keyed: AlphaVantageStub, client: AlphaVantageClient, home: DataHome, table: ListingsTable
) -> None:
    keyed.set_listings("active", [
        *GOOD,
        *[(f"OK{i}", f"Fine {i}", "NYSE", "Stock", "2001-01-02", "null", "Active")
          for i in range(10)],
        ("NEE 6.219", "NextEra Energy Inc - 6.219% Units", "NYSE", "Stock", "2022-09-16", "null",
         "Active"),
        ("BADIPO", "Bad IPO date", "NYSE", "Stock", "16/09/2022", "null", "Active"),
        ("NOIPO", "No IPO date", "NYSE", "Stock", "null", "null", "Active"),
        ("BADDEL", "Bad delisting", "NYSE", "Stock", "2001-01-02", "soon", "Active"),
        ("BACKW", "Delisted before listed", "NYSE", "Stock", "2001-01-02", "2000-01-02",
         "Active"),
        ("BOND", "A bond", "NYSE", "Bond", "2001-01-02", "null", "Active"),
        ("GONE", "Status unknown", "NYSE", "Stock", "2001-01-02", "null", "Gone"),
        ("LATE", "Delisted in the active answer", "NYSE", "Stock", "2001-01-02", "2020-01-02",
         "Delisted"),
        ("SHORT", "A short row", "NYSE", "Stock", "2001-01-02", "null"),
        ("TWICE", "First copy", "NYSE", "Stock", "2001-01-02", "null", "Active"),
        ("TWICE", "Another copy", "NYSE", "Stock", "2001-01-02", "null", "Active"),
        ("SAME", "Exact copy", "NYSE", "Stock", "2001-01-02", "null", "Active"),
        ("SAME", "Exact copy", "NYSE", "Stock", "2001-01-02", "null", "Active"),
        ("ÄPPL", "Not ASCII", "NYSE", "Stock", "2001-01-02", "null", "Active"),
    ])  # fmt: skip
    refreshed = refresh_listings(client, home, table)
    found = pl.read_parquet(home.listings_rejects_file("active"))
    assert dict(found.group_by("symbol").agg(pl.col("reason").unique()).iter_rows()) == {
        "NEE 6.219": ["bad_symbol"], "BADIPO": ["bad_ipo_date"], "NOIPO": ["missing_ipo_date"],
        "BADDEL": ["bad_delisting_date"], "BACKW": ["delisted_before_ipo"],
        "BOND": ["unknown_asset_type"], "GONE": ["unknown_status"], "LATE": ["wrong_state"],
        "SHORT": ["bad_row"], "TWICE": ["duplicate_listing"], "ÄPPL": ["bad_symbol"],
    }  # fmt: skip
    assert found.filter(pl.col("symbol") == "TWICE").height == 2, "every copy that disagrees"
    assert set(found.get_column("reason")) <= set(REJECT_RULES)
    assert found.filter(pl.col("symbol") == "BADIPO").get_column("ipoDate")[0] == "16/09/2022"
    kept = {r[0] for r in stored(home)}
    assert {"SAME", "AAPL", "OK0"} <= kept and not kept & set(refreshed.reject_counts)
    assert [r[0] for r in stored(home)].count("SAME") == 1, "an exact copy keeps one"
    assert refreshed.reject_counts["bad_symbol"] == 2 + 1  # and CHNG 6 of the delisted answer


def test_an_empty_field_for_no_date_reads_as_null(
    keyed: AlphaVantageStub, client: AlphaVantageClient, home: DataHome, table: ListingsTable
) -> None:
    keyed.script_listings("active", "empty_dates")
    keyed.script_listings("delisted", "empty_dates")
    refresh_listings(client, home, table)
    rows = {(r[0], r[4]): r for r in stored(home)}
    assert rows["AAPL", dt.date(1980, 12, 12)][5] is None
    assert pl.read_parquet(home.raw_listings_file("active")).get_column("delistingDate")[0] == ""


BAD_ANSWERS = {
    "header_only": (ListingAnswerError, "lists nothing"),
    "bad_header": (MalformedResponseError, "without the listing's columns"),
    "html": (MalformedResponseError, "an HTML page"),
    "truncated": (MalformedResponseError, "cut off"),
    "error_message": (AlphaVantageError, "refused the call"),
    "empty_object": (MalformedResponseError, "an empty object"),
    "info_daily": (DailyQuotaError, "daily quota used up"),
}


@pytest.mark.parametrize("state", ["active", "delisted"])
@pytest.mark.parametrize("fault", sorted(BAD_ANSWERS))
def test_a_bad_answer_never_replaces_the_last_good_listing(
    fault: str,
    state: str,
    keyed: AlphaVantageStub,
    client: AlphaVantageClient,
    home: DataHome,
    table: ListingsTable,
) -> None:
    refresh_listings(client, home, table)
    kept, rows = snapshot(files(home)), stored(home)
    newco = ("NEWCO", "A new listing", "NYSE", "Stock", "2025-01-02", "null", "Active")
    keyed.set_listings("active", [*LISTINGS["active"], newco])  # good, but not alone
    keyed.script_listings(state, fault)
    error, text = BAD_ANSWERS[fault]
    with pytest.raises(error, match=text) as raised:
        refresh_listings(client, home, table)
    assert TEST_KEY not in str(raised.value), "info_daily echoes the key"
    assert not isinstance(raised.value, RetryableError)
    assert snapshot(files(home)) == kept
    assert stored(home) == rows


def test_an_answer_cut_to_less_than_half_of_the_last_good_one_is_refused(
    keyed: AlphaVantageStub, client: AlphaVantageClient, home: DataHome, table: ListingsTable
) -> None:
    refresh_listings(client, home, table)
    kept = snapshot(files(home))
    keyed.set_listings("active", GOOD)  # 5 rows where the last good answer had 19
    with pytest.raises(ListingAnswerError, match="holds 5 rows, the last good one 19"):
        refresh_listings(client, home, table)
    assert snapshot(files(home)) == kept


def test_an_answer_breaking_a_rule_in_most_rows_is_refused(
    keyed: AlphaVantageStub, client: AlphaVantageClient, home: DataHome, table: ListingsTable
) -> None:
    keyed.set_listings("active", [(s, n, e, t, "12/12/1980", d, st) for s, n, e, t, _, d, st
                                  in GOOD])  # fmt: skip
    with pytest.raises(ListingAnswerError, match="5 of its 5 rows break a rule"):
        refresh_listings(client, home, table)
    assert not any(p.exists() for p in files(home)) and table.read() is None


@pytest.mark.parametrize("fault", ["note_frequency", "http_503", "reset", "cut_body"])
def test_transient_answers_are_retried_on_the_same_client(
    fault: str,
    keyed: AlphaVantageStub,
    client: AlphaVantageClient,
    home: DataHome,
    table: ListingsTable,
) -> None:
    keyed.script_listings("delisted", fault)
    assert refresh_listings(client, home, table).rows == {"active": 19, "delisted": 6}
    assert [r.state for r in keyed.requests] == ["active", "delisted", "delisted"]


def test_listing_calls_take_permits_from_the_same_daily_quota(
    keyed: AlphaVantageStub, home: DataHome, table: ListingsTable
) -> None:
    client = AlphaVantageClient(home=home, api_key=TEST_KEY, base_url=keyed.url,
                                requests_per_second=0, requests_per_minute=0,
                                requests_per_day=3)  # fmt: skip
    try:
        client.fetch_daily("AAA", "compact")
        client.fetch_listing_status("active")
        with pytest.raises(DailyQuotaError, match="ALPHAVANTAGE_REQUESTS_PER_DAY=3"):
            refresh_listings(client, home, table)
    finally:
        client.close()
    assert [r.function for r in keyed.requests] == ["TIME_SERIES_DAILY", "LISTING_STATUS",
                                                     "LISTING_STATUS"]  # fmt: skip


def test_a_failed_refresh_fails_the_asset_naming_the_answer(
    keyed: AlphaVantageStub, instance: DagsterInstance, home: DataHome
) -> None:
    resources = resources_from_env(backoff_seconds=0.01)
    assert materialize([listings], instance=instance, resources=resources).success
    kept = snapshot(files(home))
    keyed.script_listings("delisted", "bad_header")
    result = materialize([listings], instance=instance, resources=resources,
                         raise_on_error=False)  # fmt: skip
    assert not result.success
    text = failure_text(result)
    assert "LISTING_STATUS state=delisted" in text and "the last good listing stays" in text
    assert snapshot(files(home)) == kept


def test_a_column_the_vendor_adds_is_kept_and_breaks_no_row(
    keyed: AlphaVantageStub, client: AlphaVantageClient, home: DataHome, table: ListingsTable
) -> None:
    body = "\r\n".join(
        [HEADER + ",currency", *(",".join([*row, "USD"]) for row in LISTINGS["active"])]
    )
    keyed.set_listings("active", body + "\r\n")
    refreshed = refresh_listings(client, home, table)
    assert refreshed.reject_counts == {"bad_symbol": 3}, "only the odd entries"
    raw = pl.read_parquet(home.raw_listings_file("active"))
    assert raw.get_column("currency").unique().to_list() == ["USD"]
