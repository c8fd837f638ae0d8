"""The pure validation rules, on hand-made raw frames."""

from __future__ import annotations

import datetime as dt

import polars as pl
from polars.testing import assert_frame_equal

from market_pipeline.bars.rules import Rules, validate, validate_many

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


def _series(
    name: str, days: int, meta_symbol: str | None = None, start: dt.date = dt.date(2024, 1, 1)
) -> pl.DataFrame:
    """``days`` weekdays of plausible bars from ``start``, newest first as Alpha Vantage sends."""
    dates = [d for i in range(days * 2) if (d := start + dt.timedelta(days=i)).weekday() < 5]
    rows = [
        (d.isoformat(), f"{10 + i % 7}", f"{12 + i % 7}", f"{9 + i % 7}", f"{11 + i % 7}",
         f"{1000 + 10 * i}")
        for i, d in enumerate(dates[:days])
    ]  # fmt: skip
    frame = raw(rows[::-1], meta_symbol=meta_symbol or name)
    return frame.with_columns(pl.lit(name).alias("symbol"))


def _set(column: str, date: str, value: str) -> pl.Expr:
    return pl.when(pl.col("date") == date).then(pl.lit(value)).otherwise(column).alias(column)


def test_many_symbols_at_once_give_each_exactly_what_it_gets_alone() -> None:
    """No rule leaks across symbols: repeats, moves, volume medians, windows, provisional."""
    aaa = _series("AAA", 60)
    broken = [("2024-07-01", *GOOD[1:]), ("bad", *GOOD[1:]), ("2024-01-09", "1", "2", "1", "", "5")]
    aaa = pl.concat([
        aaa,
        aaa.slice(3, 1),  # an exact copy: one is kept
        aaa.slice(5, 1).with_columns(pl.lit("777").alias("volume")),  # a conflicting copy
        raw(broken),
    ]).with_columns(  # a split-like move and a thin day: flagged, not rejected
        _set("close", "2024-02-01", "40"),
        _set("high", "2024-02-01", "41"),
        _set("volume", "2024-02-15", "3"),
    )  # fmt: skip
    responses = {
        "AAA": aaa,
        "bbb": _series("BBB", 30),  # asked in lower case
        "CCC": _series("CCC", 20, meta_symbol="ZZZ"),  # another symbol's series: all rejected
        "DDD": _series("DDD", 3, start=dt.date(2024, 3, 4)),  # too short for a volume median
        "EEE": _series("EEE", 25).slice(0, 24),  # AAA's dates: no repeat across symbols
    }
    provisional = {"AAA": dt.date(2024, 3, 22), "bbb": dt.date(2024, 2, 9)}
    rules = Rules(history_start=dt.date(2024, 1, 5))

    together = validate_many(responses, today=TODAY, rules=rules, provisional=provisional)

    for symbol, frame in responses.items():
        alone = validate(
            frame, symbol, today=TODAY, rules=rules, provisional_date=provisional.get(symbol)
        )
        got = together[symbol]
        assert_frame_equal(got.clean, alone.clean)
        assert_frame_equal(got.rejects, alone.rejects)
        assert (got.filtered_out, got.reject_counts, got.flag_counts) == (
            alone.filtered_out, alone.reject_counts, alone.flag_counts
        )  # fmt: skip
    a = together["AAA"]
    assert a.reject_counts == {"duplicate_date": 3, "future_date": 1, "bad_date": 1,
                               "missing_value": 1}  # fmt: skip
    assert a.flag_counts == {"large_move": 2, "volume_outlier": 1, "provisional": 1}
    assert a.filtered_out == 4  # 2024-01-01 .. 01-04
    assert together["bbb"].clean["symbol"].unique().to_list() == ["BBB"]
    assert together["bbb"].flag_counts["provisional"] == 1
    assert together["CCC"].clean.is_empty()
    assert together["CCC"].reject_counts == {"wrong_symbol": 20}
    assert together["DDD"].clean["flags"].to_list() == [None] * 3
    assert together["EEE"].rejects.is_empty()
