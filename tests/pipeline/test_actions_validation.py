"""The corporate-action rules as pure functions: rows in, (events, rejects, counts, kinds) out."""

from __future__ import annotations

import datetime as dt

import polars as pl

from market_core.schema import DIVIDEND, SPLIT
from market_pipeline.actions.rules import (
    REJECT_COLUMNS,
    REJECT_RULES,
    RawActions,
    validate_actions,
    validate_actions_many,
)
from market_pipeline.store.actions import EVENT_SCHEMA, answered

FETCHED = dt.datetime(2026, 11, 30, 12, tzinfo=dt.UTC)
META: dict[str, pl.DataType | type[pl.DataType]] = {
    "symbol": pl.String,
    "source": pl.String,
    "fetched_at": pl.Datetime("us", "UTC"),
}


def splits(*rows: tuple[str | None, str | None]) -> pl.DataFrame:
    """A SPLITS answer as the raw_actions file holds it: strings, newest first."""
    return pl.DataFrame(
        {
            "effective_date": [r[0] for r in rows],
            "split_factor": [r[1] for r in rows],
            "symbol": ["AAPL"] * len(rows),
            "source": ["https://www.alphavantage.co/query?function=SPLITS&symbol=AAPL"] * len(rows),
            "fetched_at": [FETCHED] * len(rows),
        },
        schema_overrides={**dict.fromkeys(("effective_date", "split_factor"), pl.String), **META},
    )


def dividends(*rows: tuple[str | None, ...]) -> pl.DataFrame:
    """A DIVIDENDS answer: (ex_dividend_date, amount, declaration, record, payment)."""
    names = ("ex_dividend_date", "amount", "declaration_date", "record_date", "payment_date")
    columns: dict[str, list[object]] = {n: [r[i] for r in rows] for i, n in enumerate(names)}
    columns["symbol"] = ["AAPL"] * len(rows)
    columns["source"] = ["https://www.alphavantage.co/query?function=DIVIDENDS&symbol=AAPL"] * len(
        rows
    )
    columns["fetched_at"] = [FETCHED] * len(rows)
    return pl.DataFrame(columns, schema_overrides={**dict.fromkeys(names, pl.String), **META})


def dividend(ex: str, amount: str = "0.25", dates: str = "None") -> tuple[str, ...]:
    return (ex, amount, dates, dates, dates)


def reasons(rejects: pl.DataFrame) -> list[tuple[str, str, str]]:
    return sorted(rejects.select("kind", "ex_date", "reason").iter_rows())


def test_each_rule_rejects_its_rows_with_its_reason() -> None:
    result = validate_actions(
        splits(
            ("2020-08-31", "4.0000"),
            ("2014-06-09", "7.0000"),
            ("2005-02-28", "0"),  # not positive
            ("2000-06-21", "abc"),  # not a number
            ("1999-01-01", "inf"),  # not finite
            ("1998-01-01", "-2"),  # negative
            ("87-06-16", "2.0000"),  # ex-date not ISO
            ("", "2.0000"),  # ex-date empty
        ),
        dividends(
            dividend("2024-05-10", "0.25", "2024-05-02"),
            dividend("2024-02-09", "-0.24"),  # negative
            dividend("2023-11-10", "n/a"),  # non-numeric
            dividend("2023-08-11", ""),  # empty
            dividend("2023-05-12", "NaN"),
            dividend("2023-02-10", "0.23", "10/02/2023"),  # another date, not ISO
            dividend("2022-11-04", "0.0000"),  # zero is a dividend of nothing: kept
        ),
        "aapl",
    )
    assert reasons(result.rejects) == sorted([
        (SPLIT, "2005-02-28", "bad_split_factor"),
        (SPLIT, "2000-06-21", "bad_split_factor"),
        (SPLIT, "1999-01-01", "bad_split_factor"),
        (SPLIT, "1998-01-01", "bad_split_factor"),
        (SPLIT, "87-06-16", "bad_date"),
        (SPLIT, "", "bad_date"),
        (DIVIDEND, "2024-02-09", "bad_amount"),
        (DIVIDEND, "2023-11-10", "bad_amount"),
        (DIVIDEND, "2023-08-11", "bad_amount"),
        (DIVIDEND, "2023-05-12", "bad_amount"),
        (DIVIDEND, "2023-02-10", "bad_date"),
    ])  # fmt: skip
    assert result.reject_counts == {"bad_split_factor": 4, "bad_date": 3, "bad_amount": 4}
    assert set(result.reject_counts) <= set(REJECT_RULES)
    assert result.rejects.columns == list(REJECT_COLUMNS)
    assert result.rejects["symbol"].unique().to_list() == ["AAPL"]
    assert result.rejects.filter(pl.col("ex_date") == "2000-06-21")["split_factor"][0] == "abc"
    assert result.rejects["fetched_at"].to_list() == [FETCHED] * 11

    assert result.events.schema == pl.Schema(EVENT_SCHEMA)
    assert result.events.select("ex_date", "kind", "split_factor", "amount").rows() == [
        (dt.date(2014, 6, 9), SPLIT, 7.0, None),
        (dt.date(2020, 8, 31), SPLIT, 4.0, None),
        (dt.date(2022, 11, 4), DIVIDEND, None, 0.0),
        (dt.date(2024, 5, 10), DIVIDEND, None, 0.25),
    ], "ascending, typed, each kind's other value null"
    assert result.complete_kinds == frozenset({DIVIDEND}), "a split row had no readable ex-date"


def test_none_and_empty_dates_are_unknown_not_errors() -> None:
    result = validate_actions(
        splits(),
        dividends(
            ("2024-05-10", "0.25", "2024-05-02", "2024-05-13", "2024-05-16"),
            ("1995-11-21", "0.03", "None", "None", "None"),
            ("1995-08-16", "0.03", "", None, " None "),
            ("None", "0.03", "None", "None", "None"),  # the ex-date itself is required
        ),
        "AAPL",
    )
    assert result.events.select(
        "ex_date", "declaration_date", "record_date", "payment_date"
    ).rows() == [
        (dt.date(1995, 8, 16), None, None, None),
        (dt.date(1995, 11, 21), None, None, None),
        (dt.date(2024, 5, 10), dt.date(2024, 5, 2), dt.date(2024, 5, 13), dt.date(2024, 5, 16)),
    ]
    assert reasons(result.rejects) == [(DIVIDEND, "None", "bad_date")]
    assert result.complete_kinds == frozenset({SPLIT})


def test_exact_copies_keep_one_and_copies_that_disagree_are_all_rejected() -> None:
    result = validate_actions(
        splits(("2020-08-31", "4.0000"), ("2020-08-31", "4"), ("2014-06-09", "7.0000")),
        dividends(
            dividend("2024-05-10", "0.25"),
            dividend("2024-05-10", "0.26"),  # disagrees on the amount
            dividend("2024-02-09", "0.24", "None"),
            dividend("2024-02-09", "0.24", "2024-02-01"),  # disagrees on the dates
            dividend("2023-11-10", "0.24"),
            dividend("2023-11-10", "abc"),  # a broken copy is its own rule, not a duplicate
        ),
        "AAPL",
    )
    assert reasons(result.rejects) == sorted([
        (SPLIT, "2020-08-31", "duplicate_event"),
        (DIVIDEND, "2024-05-10", "duplicate_event"),
        (DIVIDEND, "2024-05-10", "duplicate_event"),
        (DIVIDEND, "2024-02-09", "duplicate_event"),
        (DIVIDEND, "2024-02-09", "duplicate_event"),
        (DIVIDEND, "2023-11-10", "bad_amount"),
    ])  # fmt: skip
    assert result.rejects.filter(pl.col("kind") == SPLIT)["split_factor"].to_list() == ["4"], (
        "the later copy goes to the rejects, the first is kept"
    )
    assert result.events.select("ex_date", "kind").rows() == [
        (dt.date(2014, 6, 9), SPLIT),
        (dt.date(2020, 8, 31), SPLIT),
        (dt.date(2023, 11, 10), DIVIDEND),
    ]
    assert result.complete_kinds == frozenset({SPLIT, DIVIDEND})


def test_many_symbols_are_validated_each_on_its_own() -> None:
    same_day = splits(("2020-08-31", "4.0000"))
    answers = {
        "AAPL": RawActions(same_day, dividends(dividend("2024-05-10"))),
        "MSFT": RawActions(same_day, dividends(dividend("2024-05-10", "x"))),
        "IBM": RawActions(splits(), dividends()),
    }
    many = validate_actions_many(answers)
    assert list(many) == ["AAPL", "MSFT", "IBM"]
    for symbol, raw in answers.items():
        alone = validate_actions(raw.splits, raw.dividends, symbol)
        assert many[symbol].events.equals(alone.events)
        assert many[symbol].rejects.equals(alone.rejects)
        assert many[symbol].reject_counts == alone.reject_counts
    assert many["AAPL"].events["symbol"].to_list() == ["AAPL", "AAPL"], (
        "no duplicate across symbols"
    )
    assert many["MSFT"].reject_counts == {"bad_amount": 1}
    assert many["IBM"].events.is_empty() and many["IBM"].rejects.is_empty()
    assert many["IBM"].complete_kinds == frozenset({SPLIT, DIVIDEND}), "no events is a full answer"


def test_a_file_without_the_vendor_columns_reads_as_empty_or_rejected() -> None:
    bare = pl.DataFrame({"symbol": [], "fetched_at": []}, schema={
        "symbol": pl.String, "fetched_at": pl.Datetime("us", "UTC")})  # fmt: skip
    empty = validate_actions(bare, bare, "AAPL")
    assert empty.events.is_empty() and empty.events.schema == pl.Schema(EVENT_SCHEMA)
    no_factor = pl.DataFrame({"effective_date": ["2020-08-31"], "fetched_at": [FETCHED]})
    result = validate_actions(no_factor, bare, "AAPL")
    assert reasons(result.rejects) == [(SPLIT, "2020-08-31", "bad_split_factor")]


def test_answered_keys_include_rejected_rows_with_a_readable_ex_date() -> None:
    result = validate_actions(
        splits(("2020-08-31", "4.0000"), ("2014-06-09", "-7"), ("bad", "2")),
        dividends(dividend("2024-05-10", "x")),
        "AAPL",
    )
    keys = answered(result.events, result.rejects).sort("ex_date").rows()
    assert keys == [
        ("AAPL", dt.date(2014, 6, 9), SPLIT),
        ("AAPL", dt.date(2020, 8, 31), SPLIT),
        ("AAPL", dt.date(2024, 5, 10), DIVIDEND),
    ]
