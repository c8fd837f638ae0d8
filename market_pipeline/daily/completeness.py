"""Complete sessions: the stored daily bars held against the NYSE calendar and the listings.

Three findings per symbol, for the asset checks on ``ohlcv_data`` (``defs/checks.py``):

* ``missing_sessions``: sessions with no bar, from the symbol's first bar (or its listing's
  ``ipo_date``, whichever is later) to its last bar (or its ``delisting_date``, whichever is
  earlier);
* ``not_a_session``: bars dated on a weekend or an exchange holiday (reported, never deleted);
* ``before_listing``: bars dated before the listing's ``ipo_date``.

The listing is optional: without a ``listings`` table, or without the symbol in it, the span is
first bar to last bar and nothing is before a listing. A reused ticker has several rows; the one
that applies to the bars is the latest listed on or before the first bar, else the earliest.

One statement over the symbols asked (a run's symbols: a 10-symbol update does not read a
25-million-bar table), or over the whole table, whatever the number of symbols. It counts rather
than lists: the sessions a symbol should have are counted from the calendar's running session
number, the bars it has by one aggregate pass, and only the first months short of bars are
expanded into dates (docs/design/pipeline-internals.md).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa
import tenacity

from market_core.lake import LakeError
from market_core.lake import connect as connect_lake
from market_core.listing_rules import applying_listing_sql
from market_core.schema import LISTINGS_TABLE, TABLE
from market_core.sessions import is_trading_day
from market_pipeline.store.duckdb_file import DuckDBFileStore
from market_pipeline.store.lake import LakeStore

MISSING_SESSIONS = "missing_sessions"
NOT_A_SESSION = "not_a_session"
BEFORE_LISTING = "before_listing"
FINDINGS = (MISSING_SESSIONS, NOT_A_SESSION, BEFORE_LISTING)
FIRST_DAYS = 5
"""How many dates a finding names per symbol (the earliest); the count covers them all."""
CALENDAR = "nyse_calendar"
CHECKED = "checked_symbols"


class ReportUnavailable(Exception):
    """The store's tables cannot be read right now (the DuckDB file held by a writer for over
    a minute, the lake's catalog unreachable)."""


@dataclass(frozen=True)
class Finding:
    """One symbol's days for one check: how many, and the earliest few."""

    count: int
    first: tuple[dt.date, ...]


@dataclass(frozen=True)
class SessionReport:
    """The findings of the three checks over the symbols checked (those asked that have bars)."""

    symbols_checked: int = 0
    symbols_with_listing: int = 0
    findings: dict[str, dict[str, Finding]] = field(
        default_factory=lambda: {name: {} for name in FINDINGS}
    )


_NO_LISTING_SQL = (
    "SELECT NULL::VARCHAR AS symbol, NULL::DATE AS ipo_date, NULL::DATE AS delisting_date "
    "WHERE false"
)

# The row of a reused ticker that applies, by the rule the API shares.
_LISTING_SQL = applying_listing_sql(("symbol", "ipo_date", "delisting_date"))

_REPORT_SQL = f"""
WITH bars AS (
    SELECT symbol, CAST("timestamp" AS DATE) AS day FROM {TABLE}{{only}}
),
spans AS (
    SELECT symbol, min(day) AS first_bar, max(day) AS last_bar FROM bars GROUP BY symbol
),
listing AS ({{listing}}),
bounds AS (
    SELECT s.symbol, l.symbol IS NOT NULL AS listed, l.ipo_date,
           greatest(s.first_bar, coalesce(l.ipo_date, s.first_bar)) AS start,
           least(s.last_bar, coalesce(l.delisting_date, s.last_bar)) AS stop
    FROM spans s LEFT JOIN listing l USING (symbol)
),
days AS (
    SELECT day, session, sessions_to, date_trunc('month', day) AS month FROM {CALENDAR}
),
months AS (
    SELECT month, min(day) AS first_day, max(day) AS last_day FROM days GROUP BY month
),
marked AS (
    SELECT b.symbol, b.day, c.session, c.month, b.day < d.ipo_date AS early,
           c.session AND b.day BETWEEN d.start AND d.stop AS inside
    FROM bars b JOIN days c USING (day) JOIN bounds d USING (symbol)
),
present AS (
    SELECT symbol, month, count(*) AS bars FROM marked WHERE inside GROUP BY symbol, month
),
spans_by_month AS (
    SELECT d.symbol, m.month,
           greatest(m.first_day, d.start) AS lo, least(m.last_day, d.stop) AS hi
    FROM bounds d JOIN months m ON m.first_day <= d.stop AND m.last_day >= d.start
),
expected AS (
    SELECT x.symbol, x.month, x.lo, x.hi,
           e.sessions_to - s.sessions_to + CAST(s.session AS INTEGER) AS sessions
    FROM spans_by_month x JOIN days s ON s.day = x.lo JOIN days e ON e.day = x.hi
),
short AS (
    SELECT x.symbol, x.month, x.lo, x.hi, x.sessions - coalesce(p.bars, 0) AS missing
    FROM expected x LEFT JOIN present p USING (symbol, month)
    WHERE x.sessions > coalesce(p.bars, 0)
),
first_short AS (
    SELECT * FROM short QUALIFY row_number() OVER (PARTITION BY symbol ORDER BY month) <= $first
),
near AS (
    SELECT m.symbol, m.day FROM marked m
    SEMI JOIN first_short f ON f.symbol = m.symbol AND f.month = m.month
),
missing_days AS (
    SELECT f.symbol, c.day
    FROM first_short f JOIN days c ON c.session AND c.day BETWEEN f.lo AND f.hi
    ANTI JOIN near n ON n.symbol = f.symbol AND n.day = c.day
)
SELECT d.symbol, d.listed,
       coalesce(t.missing, 0), coalesce(m.days[1:$first], []),
       coalesce(o.bars, 0), coalesce(o.days, []),
       coalesce(e.bars, 0), coalesce(e.days, [])
FROM bounds d
LEFT JOIN (SELECT symbol, sum(missing) AS missing FROM short GROUP BY symbol) t USING (symbol)
LEFT JOIN (SELECT symbol, list(day ORDER BY day) AS days FROM missing_days GROUP BY symbol) m
    USING (symbol)
LEFT JOIN (SELECT symbol, count(*) AS bars, list(day ORDER BY day)[1:$first] AS days
           FROM marked WHERE NOT session GROUP BY symbol) o USING (symbol)
LEFT JOIN (SELECT symbol, count(*) AS bars, list(day ORDER BY day)[1:$first] AS days
           FROM marked WHERE early GROUP BY symbol) e USING (symbol)
"""


def calendar(first: dt.date, last: dt.date) -> pa.Table:
    """Every day from ``first`` to ``last``: whether the exchange trades, and its running
    session number (sessions on or before it), so a span's sessions are one subtraction."""
    days = [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]
    sessions = [is_trading_day(day) for day in days]
    return pa.table(
        {
            "day": pa.array(days, pa.date32()),
            "session": sessions,
            "sessions_to": pa.array(itertools.accumulate(map(int, sessions)), pa.int32()),
        }
    )


def _has_table(conn: duckdb.DuckDBPyConnection, name: str) -> bool:
    found = conn.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
        "AND schema_name = current_schema() AND table_name = ?",
        [name],
    ).fetchone()
    return bool(found and found[0])


_ONLY_SQL = f" WHERE symbol IN (SELECT symbol FROM {CHECKED})"


def session_report(
    conn: duckdb.DuckDBPyConnection, symbols: Sequence[str] | None = None
) -> SessionReport:
    """The three checks' findings for ``symbols`` (every symbol with ``None``) in
    ``ohlcv_data`` on ``conn`` (the file's or the lake's), using the ``listings`` table when
    there is one."""
    if not _has_table(conn, TABLE) or (symbols is not None and not symbols):
        return SessionReport()
    only = ""
    if symbols is not None:
        conn.register(CHECKED, pa.table({"symbol": pa.array(sorted(set(symbols)), pa.string())}))
        only = _ONLY_SQL
    try:
        return _report(conn, only)
    finally:
        if only:
            conn.unregister(CHECKED)


def _report(conn: duckdb.DuckDBPyConnection, only: str) -> SessionReport:
    span = conn.execute(f'SELECT min("timestamp")::DATE, max("timestamp")::DATE FROM {TABLE}{only}')
    first, last = span.fetchone() or (None, None)
    if first is None or last is None:
        return SessionReport()
    listing = _LISTING_SQL if _has_table(conn, LISTINGS_TABLE) else _NO_LISTING_SQL
    conn.register(CALENDAR, calendar(first, last))
    try:
        sql = _REPORT_SQL.format(listing=listing, only=only)
        rows = conn.execute(sql, {"first": FIRST_DAYS}).fetchall()
    finally:
        conn.unregister(CALENDAR)
    findings: dict[str, dict[str, Finding]] = {name: {} for name in FINDINGS}
    for symbol, _, *counted in rows:
        for name, count, days in zip(FINDINGS, counted[::2], counted[1::2], strict=True):
            if count:
                findings[name][symbol] = Finding(count, tuple(days))
    return SessionReport(len(rows), sum(1 for row in rows if row[1]), findings)


_open_when_free = tenacity.retry(
    retry=tenacity.retry_if_exception_type(duckdb.IOException),
    wait=tenacity.wait_exponential(multiplier=0.1, max=10),
    stop=tenacity.stop_after_delay(60),
    reraise=True,
)(duckdb.connect)


@contextlib.contextmanager
def read_only(store: DuckDBFileStore | LakeStore) -> Iterator[duckdb.DuckDBPyConnection | None]:
    """A read-only connection to the store's tables, ``None`` for a DuckDB file not written
    yet. Read-only takes no write lock, so the API keeps the file while the checks read it;
    a loader holding the file makes it wait (up to a minute)."""
    if isinstance(store, LakeStore):
        conn = connect_lake(store.settings, read_only=True)
    elif Path(store.database).exists():
        conn = _open_when_free(store.database, read_only=True)
    else:
        yield None
        return
    try:
        yield conn
    finally:
        conn.close()


def stored_session_report(
    store: DuckDBFileStore | LakeStore, symbols: Sequence[str] | None = None
) -> SessionReport:
    """``session_report`` over the store's committed bars of ``symbols`` (``None``: all)."""
    try:
        with read_only(store) as conn:
            return session_report(conn, symbols) if conn is not None else SessionReport()
    except (duckdb.Error, LakeError) as exc:
        raise ReportUnavailable(f"{store.database} cannot be read: {exc}") from exc
