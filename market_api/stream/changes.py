"""The change reader: what the stream asks of the store, as SQL on a reader's cursor.

The loaders log every changed bar in ``bar_changes`` under a commit id, in the transaction of
the bars themselves; the stream reads that log alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb

from market_core.schema import (
    CHANGES_TABLE,
    COMMITS_TABLE,
    DAILY_INTERVAL,
    INTRADAY_TABLE,
    TABLE,
)

SEEN_WHOLE = 2**62
"""``n`` of an id without one: every bar of the commit was seen."""

ChangeRow = tuple[int, int, str, str, datetime, bool, float, float, float, float, int]
"""commit_id, n, symbol, interval, timestamp, revised, open, high, low, close, volume."""
Key = tuple[str, str]
"""(symbol, interval): what a subscription follows."""

_CHANGES_SQL = f"""
WITH numbered AS (
    SELECT commit_id, symbol, interval, timestamp, revised, open, high, low, close, volume,
        row_number() OVER (PARTITION BY commit_id ORDER BY symbol, interval, timestamp) - 1 AS n
    FROM {CHANGES_TABLE}
    WHERE commit_id >= $first AND commit_id <= $last
)
SELECT commit_id, n, symbol, interval, timestamp, revised, open, high, low, close, volume
FROM numbered
WHERE symbol IN (SELECT unnest($symbols)) AND interval IN (SELECT unnest($intervals))
    AND (commit_id > $after_commit OR n > $after_n)
"""
"""The log alone: each change carries the values its commit gave the bar, so a commit's events
never join the bar tables (after a load, in file mode, their indexes are cold)."""
_NEWEST = """
SELECT symbol, {interval}, max(timestamp), arg_max(open, timestamp), arg_max(high, timestamp),
    arg_max(low, timestamp), arg_max(close, timestamp), arg_max(volume, timestamp)
FROM {table}
WHERE symbol IN (SELECT unnest($symbols)) {where}
GROUP BY ALL
ORDER BY symbol
"""
_NEWEST_DAILY_SQL = _NEWEST.format(interval=f"'{DAILY_INTERVAL}'", table=TABLE, where="")
_NEWEST_INTRADAY_SQL = _NEWEST.format(
    interval="interval", table=INTRADAY_TABLE, where="AND interval = $interval"
)
_KNOWN_SQL = "SELECT DISTINCT symbol FROM {table} WHERE symbol IN (SELECT unnest($symbols))"
_COMMITS_SQL = f"SELECT min(commit_id), max(commit_id) FROM {COMMITS_TABLE}"


@dataclass(frozen=True, slots=True)
class EventId:
    """Where a client stands: every bar of commits before ``commit`` and those of ``commit``
    up to ``n`` seen."""

    commit: int
    n: int = SEEN_WHOLE
    raw: str = ""

    @classmethod
    def parse(cls, raw: str | None) -> EventId | None:
        """``<commit>`` or ``<commit>.<n>``; None without a header. Anything else is an id no
        commit has (-1): the client gets a reset rather than a resume from nowhere."""
        if not raw:
            return None
        head, _, tail = raw.strip().partition(".")
        if not head.isdigit() or (tail and not tail.isdigit()):
            return cls(-1, raw=raw[:40])
        return cls(int(head), int(tail) if tail else SEEN_WHOLE, raw=raw.strip())


def _missing_table(exc: duckdb.Error) -> bool:
    """A store written before the change log or intraday bars existed lacks their tables."""
    return isinstance(exc, duckdb.CatalogException)


def commit_range(cur: duckdb.DuckDBPyConnection) -> tuple[int | None, int]:
    """(oldest kept commit or None, newest commit or 0)."""
    try:
        row = cur.execute(_COMMITS_SQL).fetchone()
    except duckdb.Error as exc:
        if _missing_table(exc):
            return None, 0
        raise
    if row is None or row[1] is None:
        return None, 0
    return int(row[0]), int(row[1])


def changes(
    cur: duckdb.DuckDBPyConnection,
    since: EventId,
    last: int,
    symbols: Sequence[str],
    intervals: Iterable[str],
) -> list[ChangeRow]:
    """The changed bars after ``since`` up to commit ``last``, of ``symbols`` in ``intervals``,
    with the values each commit gave them, by (commit, n)."""
    wanted = set(intervals)
    first = since.commit + 1 if since.n == SEEN_WHOLE else since.commit
    if not symbols or not wanted or last < first:
        return []
    params = {
        "first": first,  # a commit seen whole is not numbered again: it may be a backfill's
        "last": last,
        "after_commit": since.commit,
        "after_n": since.n,
        "symbols": list(symbols),
        "intervals": sorted(wanted),
    }
    rows = _fetch(cur, _CHANGES_SQL, params)
    rows.sort(key=lambda row: (row[0], row[1]))
    return rows


def newest_bars(
    cur: duckdb.DuckDBPyConnection, symbols: Sequence[str], interval: str, commit: int
) -> list[ChangeRow]:
    """Each symbol's newest bar of ``interval``, as change rows of ``commit`` (seen whole)."""
    if interval == DAILY_INTERVAL:
        found = _fetch(cur, _NEWEST_DAILY_SQL, {"symbols": list(symbols)})
    else:
        found = _fetch(cur, _NEWEST_INTRADAY_SQL, {"symbols": list(symbols), "interval": interval})
    return [
        (commit, SEEN_WHOLE, s, i, t, False, o, h, lo, c, v) for s, i, t, o, h, lo, c, v in found
    ]


def unknown_symbols(cur: duckdb.DuckDBPyConnection, symbols: Sequence[str]) -> list[str]:
    """The symbols with neither daily nor intraday bars (the ohlcv endpoint's 404)."""
    known: set[str] = set()
    for table in (TABLE, INTRADAY_TABLE):
        rows = _fetch(cur, _KNOWN_SQL.format(table=table), {"symbols": list(symbols)})
        known.update(row[0] for row in rows)
    return [s for s in symbols if s not in known]


def _fetch(cur: duckdb.DuckDBPyConnection, sql: str, params: dict[str, object]) -> list[Any]:
    try:
        return cur.execute(sql, params).fetchall()
    except duckdb.Error as exc:
        if _missing_table(exc):
            return []
        raise
