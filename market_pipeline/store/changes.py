"""The change log the push stream reads (``bar_changes``, ``bar_commits``), written in the same
transaction as the bars, before the upsert, so a reader never sees a change whose bar is not
there and a reload that changes nothing logs nothing. Backfills and pruning:
docs/design/pipeline-internals.md.
"""

from __future__ import annotations

import duckdb

from market_core.schema import (
    BAR_VALUES,
    CHANGES_TABLE,
    COMMITS_TABLE,
    DAILY_INTERVAL,
    INTRADAY_TABLE,
    TABLE,
)

KEEP_DAYS = 7
"""How long changes stay resumable: a client away for longer gets ``event: reset``. A module
constant, not a setting: the log of a week of commits is small, and nobody has needed another."""

_VALUES = BAR_VALUES
_KEYS = {TABLE: ("symbol", "timestamp"), INTRADAY_TABLE: ("symbol", "interval", "timestamp")}
_INTERVAL = {TABLE: f"'{DAILY_INTERVAL}'", INTRADAY_TABLE: "i.interval"}

NEXT_COMMIT_SQL = f"SELECT coalesce(max(commit_id), 0) + 1 FROM {COMMITS_TABLE}"
INSERT_COMMIT_SQL = f"INSERT INTO {COMMITS_TABLE} VALUES ($commit, now())"
# The newest commit old enough to prune; None (nothing to do) almost always.
CUTOFF_SQL = f"""
SELECT max(commit_id) FROM {COMMITS_TABLE}
WHERE committed_at < now() - to_days(CAST($keep_days AS INTEGER))
"""
PRUNE_CHANGES_SQL = f"DELETE FROM {CHANGES_TABLE} WHERE commit_id <= $cutoff"
PRUNE_COMMITS_SQL = f"""
DELETE FROM {COMMITS_TABLE}
WHERE commit_id <= $cutoff AND commit_id < (SELECT max(commit_id) FROM {COMMITS_TABLE})
"""


_COLUMNS = f"commit_id, symbol, interval, timestamp, revised, {', '.join(_VALUES)}"
_NEW_VALUES = ", ".join(f"i.{c}" for c in _VALUES)


def _changed_sql(table: str, incoming: str) -> str:
    keys = " AND ".join(f"s.{k} = i.{k}" for k in _KEYS[table])
    differs = " OR ".join(f"s.{c} IS DISTINCT FROM i.{c}" for c in _VALUES)
    return f"""
INSERT INTO {CHANGES_TABLE} ({_COLUMNS})
SELECT $commit, i.symbol, {_INTERVAL[table]}, i.timestamp, s.symbol IS NOT NULL, {_NEW_VALUES}
FROM {incoming} AS i LEFT JOIN {table} AS s ON {keys}
WHERE s.symbol IS NULL OR {differs}
"""


_KNOWN_ELSEWHERE = {TABLE: INTRADAY_TABLE, INTRADAY_TABLE: TABLE}
"""Where a symbol new to a table may already have bars, which make it known to the streams."""
TABLE_EXISTS_SQL = """
SELECT count(*) FROM duckdb_tables()
WHERE table_name = $table AND database_name = current_database()
"""


def _new_sql(table: str, incoming: str) -> str:
    return f"""
INSERT INTO {CHANGES_TABLE} ({_COLUMNS})
SELECT $commit, i.symbol, {_INTERVAL[table]}, i.timestamp, false, {_NEW_VALUES}
FROM {incoming} AS i
WHERE i.symbol IN (SELECT symbol FROM {_KNOWN_ELSEWHERE[table]})
"""


def _log_new(conn: duckdb.DuckDBPyConnection, table: str, incoming: str, commit: int) -> int:
    """A batch none of whose symbols has a bar in ``table``: a stream can follow only those of
    its symbols that have bars in the other table (a stream of a symbol with no bars at all is
    a 404), so only their rows are logged, and a backfill of new symbols logs none (it would
    add every bar of the backfill to the log, a quarter more time, for nobody)."""
    if not _scalar(conn, TABLE_EXISTS_SQL, {"table": _KNOWN_ELSEWHERE[table]}):
        return 0
    return _scalar(conn, _new_sql(table, incoming), {"commit": commit})


def record_changes(
    conn: duckdb.DuckDBPyConnection,
    table: str,
    incoming: str = "incoming",
    *,
    all_new: bool = False,
    keep_days: int = KEEP_DAYS,
) -> int:
    """Log the bars of the registered ``incoming`` that are new to ``table`` (``ohlcv_data``,
    interval ``1d``, or ``ohlcv_intraday``, the batch's own ``interval``) or revised; return
    how many. Call it inside the writing transaction, before the upsert. ``all_new``: the
    caller knows no bar of the batch's symbols is stored, so every row is new (no join), and
    only the rows a stream could follow are logged (``_log_new``); the commit still takes its
    id, since it changed bars."""
    if table not in _KEYS:
        raise ValueError(f"{table}: no change log for this table; expected {sorted(_KEYS)}")
    commit = _scalar(conn, NEXT_COMMIT_SQL, {})
    if all_new:
        changed = _log_new(conn, table, incoming, commit)
        if not changed and not _scalar(conn, f"SELECT count(*) FROM {incoming}", {}):
            return 0
    else:
        changed = _scalar(conn, _changed_sql(table, incoming), {"commit": commit})
        if not changed:
            return 0
    conn.execute(INSERT_COMMIT_SQL, {"commit": commit})
    prune(conn, keep_days)
    return changed


def prune(conn: duckdb.DuckDBPyConnection, keep_days: int = KEEP_DAYS) -> None:
    """Drop the changes of commits older than ``keep_days``, keeping the newest commit's row."""
    row = conn.execute(CUTOFF_SQL, {"keep_days": keep_days}).fetchone()
    cutoff = None if row is None else row[0]
    if cutoff is None:
        return
    conn.execute(PRUNE_CHANGES_SQL, {"cutoff": cutoff})
    conn.execute(PRUNE_COMMITS_SQL, {"cutoff": cutoff})


def _scalar(conn: duckdb.DuckDBPyConnection, sql: str, params: dict[str, object]) -> int:
    row = conn.execute(sql, params).fetchone()
    return 0 if row is None or row[0] is None else int(row[0])
