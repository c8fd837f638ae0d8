"""The session findings on a real DuckDB file: the listing that applies, the span it bounds, and
the one-statement query held against the checks' definition computed the slow way."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from market_core.schema import CREATE_LISTINGS_SQL, CREATE_TABLE_SQL
from market_core.sessions import is_trading_day, sessions_between
from market_pipeline.daily.completeness import (
    BEFORE_LISTING,
    FIRST_DAYS,
    MISSING_SESSIONS,
    NOT_A_SESSION,
    Finding,
    ReportUnavailable,
    SessionReport,
    stored_session_report,
)
from market_pipeline.store.duckdb_file import DuckDBFileStore

Listing = tuple[str, dt.date | None, dt.date | None]


def day(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


def write(path: Path, bars: dict[str, list[dt.date]], listings: list[Listing] | None) -> None:
    rows = [(s, d) for s, days in bars.items() for d in days]
    incoming = pa.table(
        {"symbol": [s for s, _ in rows], "day": pa.array([d for _, d in rows], pa.date32())}
    )
    with duckdb.connect(str(path)) as conn:
        conn.execute(CREATE_TABLE_SQL)
        conn.register("incoming", incoming)
        conn.execute(
            "INSERT INTO ohlcv_data SELECT CAST(day AS TIMESTAMP), symbol, 1, 2, 0.5, 1.5, 100 "
            "FROM incoming"
        )
        if listings is not None:
            conn.execute(CREATE_LISTINGS_SQL)
            for listing in listings:
                conn.execute(
                    "INSERT INTO listings VALUES "
                    "(?, '', 'NYSE', 'Stock', ?, ?, 'active', current_date, current_date)",
                    listing,
                )


def report(
    tmp_path: Path, bars: dict[str, list[dt.date]], listings: list[Listing] | None = None
) -> SessionReport:
    path = tmp_path / "market_data.duckdb"
    write(path, bars, listings)
    return stored_session_report(DuckDBFileStore(path))


def test_a_data_home_without_bars_has_nothing_to_report(tmp_path: Path) -> None:
    assert stored_session_report(DuckDBFileStore(tmp_path / "none.duckdb")) == SessionReport()
    assert report(tmp_path, {}) == SessionReport()


def test_a_hole_across_a_month_is_counted_whole_and_named_from_its_start(tmp_path: Path) -> None:
    days = sessions_between(day("2024-10-01"), day("2024-11-29"))
    hole = [d for d in days if day("2024-10-25") <= d <= day("2024-11-08")]
    found = report(tmp_path, {"AAA": [d for d in days if d not in hole]})
    assert found.symbols_checked == 1 and found.symbols_with_listing == 0
    assert found.findings[MISSING_SESSIONS] == {"AAA": Finding(len(hole), tuple(hole[:FIRST_DAYS]))}


def test_weekend_and_holiday_bars_are_not_sessions(tmp_path: Path) -> None:
    days = [*sessions_between(day("2024-12-20"), day("2024-12-31")), day("2024-12-25")]
    days += [day("2024-12-21")]  # a Saturday
    found = report(tmp_path, {"AAA": days})
    assert found.findings[NOT_A_SESSION] == {
        "AAA": Finding(2, (day("2024-12-21"), day("2024-12-25")))
    }
    assert found.findings[MISSING_SESSIONS] == {}


def test_the_listing_bounds_the_span_and_names_the_bars_before_it(tmp_path: Path) -> None:
    days = sessions_between(day("2024-01-02"), day("2024-03-28"))
    kept = [d for d in days if d not in (day("2024-01-10"), day("2024-03-20"))]
    found = report(
        tmp_path,
        {"AAA": kept, "BBB": kept},
        [("AAA", day("2024-02-01"), day("2024-03-01"))],  # BBB has no listing
    )
    assert found.symbols_with_listing == 1
    assert found.findings[MISSING_SESSIONS] == {
        "BBB": Finding(2, (day("2024-01-10"), day("2024-03-20")))
    }, "AAA's gaps lie outside its listing"
    before = [d for d in kept if d < day("2024-02-01")]
    assert found.findings[BEFORE_LISTING] == {"AAA": Finding(len(before), tuple(before[:5]))}


@pytest.mark.parametrize(
    ("first_bar", "applies"),
    [
        ("2021-06-01", "2021-03-01"),  # the latest listed on or before the first bar
        ("2012-06-01", "1990-05-01"),
        ("1985-06-03", "1990-05-01"),  # none listed yet: the earliest
    ],
)
def test_a_reused_ticker_s_listing_is_the_one_the_bars_belong_to(
    tmp_path: Path, first_bar: str, applies: str
) -> None:
    days = sessions_between(day(first_bar), day(first_bar) + dt.timedelta(days=60))
    listings = [("AAA", day("1990-05-01"), day("2019-06-28")), ("AAA", day("2021-03-01"), None)]
    found = report(tmp_path, {"AAA": days}, listings)
    before = [d for d in days if d < day(applies)]
    expected = {"AAA": Finding(len(before), tuple(before[:5]))} if before else {}
    assert found.findings[BEFORE_LISTING] == expected
    assert found.findings[MISSING_SESSIONS] == {}


def test_a_store_that_cannot_be_read_is_unavailable_not_empty(tmp_path: Path) -> None:
    path = tmp_path / "market_data.duckdb"
    write(path, {"AAA": [day("2024-11-01")]}, None)
    held = duckdb.connect(str(path))  # read-write in this process: no read-only opening
    try:
        with pytest.raises(ReportUnavailable, match=r"market_data\.duckdb cannot be read"):
            stored_session_report(DuckDBFileStore(path))
    finally:
        held.close()


def slow_findings(
    bars: dict[str, list[dt.date]], listings: list[Listing]
) -> dict[str, dict[str, Finding]]:
    """The checks' definitions, symbol by symbol and day by day."""
    found: dict[str, dict[str, Finding]] = {name: {} for name in FINDINGS}
    for symbol, days in bars.items():
        have = set(days)
        first, last = min(have), max(have)
        rows = [(ipo, end) for s, ipo, end in listings if s == symbol]
        since = [r for r in rows if (r[0] or dt.date.min) <= first]
        ipo, end = (
            max(since, key=lambda r: r[0] or dt.date.min)
            if since
            else min(rows, default=(None, None), key=lambda r: r[0] or dt.date.min)
        )
        start, stop = max(first, ipo or first), min(last, end or last)
        each = {
            MISSING_SESSIONS: [d for d in sessions_between(start, stop) if d not in have]
            if start <= stop
            else [],
            NOT_A_SESSION: sorted(d for d in have if not is_trading_day(d)),
            BEFORE_LISTING: sorted(d for d in have if ipo and d < ipo),
        }
        for name, listed in each.items():
            if listed:
                found[name][symbol] = Finding(len(listed), tuple(listed[:FIRST_DAYS]))
    return found


FINDINGS = (MISSING_SESSIONS, NOT_A_SESSION, BEFORE_LISTING)


def test_the_query_agrees_with_the_definition_on_random_histories(tmp_path: Path) -> None:
    rng = random.Random(20)
    bars: dict[str, list[dt.date]] = {}
    listings: list[Listing] = []
    for i in range(40):
        symbol = f"S{i:02d}"
        start = day("2015-01-01") + dt.timedelta(days=rng.randrange(2500))
        stop = start + dt.timedelta(days=rng.randrange(1, 400))
        every = [start + dt.timedelta(days=n) for n in range((stop - start).days + 1)]
        days = [d for d in every if is_trading_day(d) and rng.random() > 0.03]
        days += rng.sample([d for d in every if not is_trading_day(d)], k=rng.choice((0, 0, 1, 3)))
        if rng.random() < 0.3:  # a hole of a few weeks
            hole = start + dt.timedelta(days=rng.randrange((stop - start).days + 1))
            days = [d for d in days if not hole <= d < hole + dt.timedelta(days=25)]
        if not days:
            continue
        bars[symbol] = days
        for _ in range(rng.choice((0, 1, 1, 2))):
            ipo = rng.choice((None, start + dt.timedelta(days=rng.randrange(-300, 300))))
            end = rng.choice((None, stop + dt.timedelta(days=rng.randrange(-200, 50))))
            if (symbol, ipo) not in {(s, i) for s, i, _ in listings}:
                listings.append((symbol, ipo, end))

    found = report(tmp_path, bars, listings)

    assert found.symbols_checked == len(bars)
    assert found.findings == slow_findings(bars, listings)
    assert all(found.findings.values()), "every kind of finding occurs"


def test_a_report_over_some_symbols_equals_the_whole_table_s_for_them(tmp_path: Path) -> None:
    """What a run's checks read: its symbols' bars only, with the same findings as the whole
    table's report has for them; a symbol without bars is not checked."""
    rng = random.Random(7)
    days = sessions_between(day("2023-01-02"), day("2024-12-31"))
    bars = {f"S{i:02d}": [d for d in days if rng.random() > 0.01] for i in range(12)}
    bars["S03"] = [*bars["S03"], day("2024-12-21")]  # a Saturday
    listings: list[Listing] = [("S03", day("2023-06-01"), None)]
    path = tmp_path / "market_data.duckdb"
    write(path, bars, listings)
    store = DuckDBFileStore(path)
    whole = stored_session_report(store)
    asked = ["S03", "S07", "NOBARS"]

    some = stored_session_report(store, asked)

    assert some.symbols_checked == 2 and some.symbols_with_listing == 1
    assert some.findings == {
        name: {s: f for s, f in found.items() if s in asked}
        for name, found in whole.findings.items()
    }
    assert some.findings[NOT_A_SESSION] and some.findings[BEFORE_LISTING]
    assert stored_session_report(store, []) == SessionReport()
