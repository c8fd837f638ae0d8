"""clean_actions and DuckDBFileStore.load_actions on real files and a real DuckDB file."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import duckdb
import polars as pl
import pytest

from market_core import data_version
from market_core.handoff import VersionWatch
from market_core.home import DataHome
from market_core.schema import CREATE_ACTIONS_SQL, DIVIDEND, SPLIT
from market_core.store import ActionsLoadStats
from market_pipeline.actions.clean import ActionsError, ActionsResult, clean_actions
from market_pipeline.actions.rules import REJECT_COLUMNS
from market_pipeline.store.duckdb_file import DuckDBFileStore
from market_pipeline.store.files import write_parquet_atomic
from tests.pipeline.test_actions_validation import dividend, dividends, splits

Dividend = tuple[str | None, ...]


def fetched(
    home: DataHome,
    symbol: str,
    split_rows: Sequence[tuple[str | None, str | None]] = (),
    dividend_rows: Sequence[Dividend] = (),
) -> None:
    """What fetch_raw_actions leaves: both answers, as received."""
    write_parquet_atomic(splits(*split_rows), home.raw_actions_file(symbol, "splits"))
    write_parquet_atomic(dividends(*dividend_rows), home.raw_actions_file(symbol, "dividends"))


def results(home: DataHome, symbols: Sequence[str]) -> list[ActionsResult]:
    outcomes = clean_actions(home, symbols)
    assert all(isinstance(o, ActionsResult) for o in outcomes.values()), outcomes
    return [o for o in outcomes.values() if isinstance(o, ActionsResult)]


def load(home: DataHome, *symbols: str) -> ActionsLoadStats:
    return DuckDBFileStore(database=str(home.duckdb_path)).load_actions(results(home, symbols))


def stored(home: DataHome) -> list[tuple[object, ...]]:
    with duckdb.connect(str(home.duckdb_path), read_only=True) as conn:
        return conn.execute(
            "SELECT * FROM corporate_actions ORDER BY symbol, ex_date, kind"
        ).fetchall()


def version(home: DataHome) -> str | None:
    return data_version.read(home.version_path)


def d(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


AAPL_SPLITS = [("2020-08-31", "4.0000"), ("2014-06-09", "7.0000")]
AAPL_DIVIDENDS = [
    ("2024-05-10", "0.25", "2024-05-02", "2024-05-13", "2024-05-16"),
    dividend("2024-02-09", "0.24"),
]


def test_a_symbol_without_files_fails_alone_and_rejects_are_always_written(
    home: DataHome,
) -> None:
    fetched(home, "AAPL", AAPL_SPLITS, [*AAPL_DIVIDENDS, dividend("2023-11-10", "-1")])
    outcomes = clean_actions(home, ["MSFT", "AAPL"])
    assert list(outcomes) == ["MSFT", "AAPL"]
    error = outcomes["MSFT"]
    assert isinstance(error, ActionsError)
    assert "MSFT" in str(error) and "materialize raw_actions" in str(error)
    assert not home.actions_rejects_file("MSFT").exists()
    aapl = outcomes["AAPL"]
    assert isinstance(aapl, ActionsResult)
    assert aapl.events.height == 4 and aapl.reject_counts == {"bad_amount": 1}
    assert aapl.complete_kinds == frozenset({SPLIT, DIVIDEND})
    rejects = pl.read_parquet(home.actions_rejects_file("AAPL"))
    assert rejects.columns == list(REJECT_COLUMNS)
    assert rejects.select("ex_date", "amount", "reason").rows() == [
        ("2023-11-10", "-1", "bad_amount")
    ]

    fetched(home, "AAPL", AAPL_SPLITS, AAPL_DIVIDENDS)  # the next answer is clean
    assert isinstance(clean_actions(home, ["AAPL"])["AAPL"], ActionsResult)
    assert pl.read_parquet(home.actions_rejects_file("AAPL")).is_empty(), "old rejects replaced"


def test_a_symbol_with_only_one_file_names_the_missing_one(home: DataHome) -> None:
    write_parquet_atomic(splits(*AAPL_SPLITS), home.raw_actions_file("AAPL", "splits"))
    error = clean_actions(home, ["AAPL"])["AAPL"]
    assert isinstance(error, ActionsError)
    assert str(home.raw_actions_file("AAPL", "dividends")) in str(error)


def test_first_load_inserts_and_an_identical_reload_changes_nothing(home: DataHome) -> None:
    fetched(home, "AAPL", AAPL_SPLITS, AAPL_DIVIDENDS)
    fetched(home, "MSFT", [("2003-02-18", "2.0000")], [])
    assert load(home, "AAPL", "MSFT") == ActionsLoadStats(inserted=5, updated=0, deleted=0)
    rows = stored(home)
    assert rows == [
        ("AAPL", d("2014-06-09"), SPLIT, 7.0, None, None, None, None),
        ("AAPL", d("2020-08-31"), SPLIT, 4.0, None, None, None, None),
        ("AAPL", d("2024-02-09"), DIVIDEND, None, 0.24, None, None, None),
        ("AAPL", d("2024-05-10"), DIVIDEND, None, 0.25,
         d("2024-05-02"), d("2024-05-13"), d("2024-05-16")),
        ("MSFT", d("2003-02-18"), SPLIT, 2.0, None, None, None, None),
    ]  # fmt: skip
    first = version(home)
    assert first is not None

    again = load(home, "AAPL", "MSFT")
    assert again == ActionsLoadStats(inserted=0, updated=0, deleted=0)
    assert not again.changed
    assert stored(home) == rows
    assert version(home) == first, "an identical answer is no new data version"
    record = data_version.read_record(home.version_path)
    assert record is not None
    assert record.fingerprint == data_version.fingerprint(home.duckdb_path)


def test_a_revised_event_replaces_the_old_one_and_is_a_new_version(home: DataHome) -> None:
    fetched(home, "AAPL", AAPL_SPLITS, AAPL_DIVIDENDS)
    load(home, "AAPL")
    before = version(home)
    revised = [AAPL_DIVIDENDS[0], ("2024-02-09", "0.2400", "2024-02-01", "None", "None")]
    fetched(home, "AAPL", [("2020-08-31", "4.0000"), ("2014-06-09", "7.5")], revised)

    stats = load(home, "AAPL")
    assert stats == ActionsLoadStats(inserted=0, updated=2, deleted=0)
    rows = {(r[1], r[2]): r for r in stored(home)}
    assert rows[d("2014-06-09"), SPLIT][3] == 7.5
    assert rows[d("2024-02-09"), DIVIDEND][4:] == (0.24, d("2024-02-01"), None, None)
    assert len(rows) == 4
    assert version(home) not in (None, before)


def test_a_vanished_event_is_deleted_only_when_its_kind_was_complete(home: DataHome) -> None:
    fetched(home, "AAPL", AAPL_SPLITS, AAPL_DIVIDENDS)
    fetched(home, "MSFT", [("2003-02-18", "2.0000")], [dividend("2024-05-15", "0.75")])
    load(home, "AAPL", "MSFT")
    before = version(home)
    # The 2014 split and the 2024-02 dividend vanish; a dividend row has no readable ex-date.
    fetched(home, "AAPL", [AAPL_SPLITS[0]], [AAPL_DIVIDENDS[0], dividend("None", "0.24")])

    stats = load(home, "AAPL")
    assert stats == ActionsLoadStats(
        inserted=0, updated=0, deleted=1, deleted_by_symbol={"AAPL": ["2014-06-09 split"]}
    )
    keys = [(r[0], r[1], r[2]) for r in stored(home)]
    assert keys == [
        ("AAPL", d("2020-08-31"), SPLIT),
        ("AAPL", d("2024-02-09"), DIVIDEND),  # kept: its kind had an unreadable row
        ("AAPL", d("2024-05-10"), DIVIDEND),
        ("MSFT", d("2003-02-18"), SPLIT),  # another symbol's events are not this answer's
        ("MSFT", d("2024-05-15"), DIVIDEND),
    ]
    assert version(home) not in (None, before), "a deletion is a change"

    fetched(home, "AAPL", [], [])  # the vendor now lists no event at all: a full answer
    assert load(home, "AAPL").deleted_by_symbol == {
        "AAPL": ["2020-08-31 split", "2024-02-09 dividend", "2024-05-10 dividend"]
    }
    assert [r[0] for r in stored(home)] == ["MSFT", "MSFT"]


def test_a_bad_row_never_changes_or_deletes_a_stored_event(home: DataHome) -> None:
    fetched(home, "AAPL", AAPL_SPLITS, AAPL_DIVIDENDS)
    load(home, "AAPL")
    rows, before = stored(home), version(home)
    fetched(
        home,
        "AAPL",
        [("2020-08-31", "-4"), ("2014-06-09", "7.0000")],  # a broken factor: bad_split_factor
        [
            dividend("2024-05-10", "0.30"),  # two copies that disagree: duplicate_event
            dividend("2024-05-10", "0.31"),
            ("2024-02-09", "0.99", "01/02/2024", "None", "None"),  # bad_date
        ],
    )
    [result] = results(home, ["AAPL"])
    assert result.reject_counts == {"bad_split_factor": 1, "duplicate_event": 2, "bad_date": 1}
    assert result.complete_kinds == frozenset({SPLIT, DIVIDEND})

    stats = DuckDBFileStore(database=str(home.duckdb_path)).load_actions([result])
    assert stats == ActionsLoadStats(inserted=0, updated=0, deleted=0)
    assert stored(home) == rows
    assert version(home) == before


def test_ohlcv_untouched_and_a_new_version_when_only_actions_changed(home: DataHome) -> None:
    db = DuckDBFileStore(database=str(home.duckdb_path))
    bars = pl.DataFrame(
        {
            "timestamp": [dt.datetime(2024, 5, 9), dt.datetime(2024, 5, 10)],
            "symbol": ["AAPL", "AAPL"],
            "open": [183.0, 184.9],
            "high": [184.7, 185.1],
            "low": [182.6, 182.7],
            "close": [184.6, 183.1],
            "volume": [48_983_000, 50_759_500],
        }
    )
    db.load([bars])
    with duckdb.connect(str(home.duckdb_path), read_only=True) as conn:
        ohlcv = conn.execute("SELECT * FROM ohlcv_data ORDER BY timestamp").fetchall()
    watch = VersionWatch(home)
    bars_version = watch.current()
    assert bars_version is not None

    fetched(home, "AAPL", AAPL_SPLITS, AAPL_DIVIDENDS)
    assert db.load_actions(results(home, ["AAPL"])).inserted == 4
    with duckdb.connect(str(home.duckdb_path), read_only=True) as conn:
        assert conn.execute("SELECT * FROM ohlcv_data ORDER BY timestamp").fetchall() == ohlcv
    assert version(home) != bars_version
    assert watch.current() == version(home), "readers see the published version, no derived one"


def test_a_failed_load_stores_nothing(home: DataHome) -> None:
    home.root.mkdir(parents=True)
    with duckdb.connect(str(home.duckdb_path)) as conn:  # a table that refuses huge factors
        conn.execute(CREATE_ACTIONS_SQL.replace("UNIQUE", "CHECK (split_factor < 100), UNIQUE"))
    fetched(home, "AAPL", AAPL_SPLITS, AAPL_DIVIDENDS)
    load(home, "AAPL")
    rows, before = stored(home), version(home)
    # The 2014 split vanishes (deleted first), then the insert of the new split fails.
    fetched(home, "AAPL", [("2025-01-02", "1000"), AAPL_SPLITS[0]], AAPL_DIVIDENDS)
    with pytest.raises(duckdb.ConstraintException):
        load(home, "AAPL")
    assert stored(home) == rows, "the delete was rolled back with the insert"
    assert version(home) == before


def test_an_event_given_twice_is_refused_before_anything_is_written(home: DataHome) -> None:
    fetched(home, "AAPL", AAPL_SPLITS, AAPL_DIVIDENDS)
    [result] = results(home, ["AAPL"])
    db = DuckDBFileStore(database=str(home.duckdb_path))
    doubled = ActionsResult(
        symbol="AAPL",
        events=pl.concat([result.events, result.events.head(1)]),
        rejects=result.rejects,
        reject_counts={},
        complete_kinds=result.complete_kinds,
    )
    with pytest.raises(ValueError, match="2014-06-09 split is given twice"):
        db.load_actions([doubled])
    with pytest.raises(ValueError, match="symbols given twice"):
        db.load_actions([result, result])
    db.load_actions([])
    assert stored(home) == [], "the table exists from the first use on, empty"
