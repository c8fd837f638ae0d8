"""The pure validation rules, on hand-made raw frames."""

from __future__ import annotations

import datetime as dt

import polars as pl

from market_pipeline.validation import Rules, validate

TODAY = dt.date(2024, 6, 28)


def raw(rows: list[tuple[str, str, str, str, str, str]], meta_symbol: str = "AAA") -> pl.DataFrame:
    dates, o, h, lo, c, v = (list(col) for col in zip(*rows, strict=True))
    n = len(rows)
    return pl.DataFrame({
        "symbol": ["AAA"] * n, "date": dates, "open": o, "high": h, "low": lo, "close": c,
        "volume": v, "meta_symbol": [meta_symbol] * n,
        "fetched_at": [dt.datetime(2024, 6, 28, tzinfo=dt.UTC)] * n,
    })  # fmt: skip


GOOD = ("2024-06-03", "10", "11", "9", "10.5", "100")


def test_exact_copies_keep_one_and_conflicting_copies_are_all_rejected() -> None:
    frame = raw([
        GOOD, GOOD,
        ("2024-06-04", "10", "11", "9", "10.5", "100"),
        ("2024-06-04", "10", "11", "9", "10.9", "100"),
        ("2024-06-05", "10", "11", "9", "10.5", "100"),
    ])  # fmt: skip
    result = validate(frame, "AAA", today=TODAY)
    assert [d.isoformat() for d in result.clean["timestamp"].dt.date()] == [
        "2024-06-03", "2024-06-05"
    ]  # fmt: skip
    assert sorted(result.rejects.select("timestamp", "reason").iter_rows()) == [
        ("2024-06-03", "duplicate_date"),
        ("2024-06-04", "duplicate_date"),
        ("2024-06-04", "duplicate_date"),
    ]


def test_bad_dates_future_dates_and_another_symbol_are_rejected() -> None:
    frame = raw([GOOD, ("06/04/2024", *GOOD[1:]), ("2024-07-01", *GOOD[1:])])
    result = validate(frame, "AAA", today=TODAY)
    assert dict(result.rejects.select("timestamp", "reason").iter_rows()) == {
        "06/04/2024": "bad_date",
        "2024-07-01": "future_date",
    }
    other = validate(raw([GOOD], meta_symbol="BBB"), "AAA", today=TODAY)
    assert other.clean.is_empty() and other.reject_counts == {"wrong_symbol": 1}


def test_clean_rows_are_typed_sorted_upper_case_and_provisional_is_flagged() -> None:
    frame = raw([("2024-06-05", "10", "11", "9", "10.5", "100.0"), GOOD])
    result = validate(frame, "aaa", today=TODAY, provisional_date=dt.date(2024, 6, 5))
    clean = result.clean
    assert clean["symbol"].to_list() == ["AAA", "AAA"]
    assert clean["timestamp"].to_list() == [dt.datetime(2024, 6, 3), dt.datetime(2024, 6, 5)]
    assert clean.schema["volume"] == pl.Int64 and clean["volume"].to_list() == [100, 100]
    assert clean["flags"].to_list() == [None, "provisional"]


def test_move_threshold_is_configurable() -> None:
    frame = raw([GOOD, ("2024-06-04", "10", "16", "9", "15.0", "100")])
    assert validate(frame, "AAA", today=TODAY).flag_counts["large_move"] == 1
    loose = validate(frame, "AAA", today=TODAY, rules=Rules(move_threshold=0.6))
    assert loose.flag_counts["large_move"] == 0
