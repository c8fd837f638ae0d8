"""``corporate_actions``: its typed columns, its key, and every statement that writes or reads it.

The file takes a load as ``ON CONFLICT`` plus ``DELETE ... RETURNING``; the lake, which has
neither unique constraints nor ``RETURNING``, as ``MERGE`` plus a select and a delete by the same
predicate. Both read the same three relations (``actions_frames``) and count the same way.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import duckdb
import polars as pl

from market_core.schema import ACTIONS_COLUMNS, ACTIONS_TABLE, CREATE_ACTIONS_SQL
from market_core.store import ActionsLoadStats, SymbolActions

EVENT_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "symbol": pl.String,
    "ex_date": pl.Date,
    "kind": pl.String,
    "split_factor": pl.Float64,
    "amount": pl.Float64,
    "declaration_date": pl.Date,
    "record_date": pl.Date,
    "payment_date": pl.Date,
}
assert tuple(EVENT_SCHEMA) == ACTIONS_COLUMNS
KEY_COLUMNS = ("symbol", "ex_date", "kind")
KEY_SCHEMA = {c: EVENT_SCHEMA[c] for c in KEY_COLUMNS}
_VALUES = tuple(c for c in ACTIONS_COLUMNS if c not in KEY_COLUMNS)
_LIST = ", ".join(ACTIONS_COLUMNS)

UPSERT_ACTIONS_SQL = f"""
INSERT INTO {ACTIONS_TABLE} ({_LIST})
SELECT {_LIST} FROM incoming_actions
ON CONFLICT (symbol, ex_date, kind) DO UPDATE SET
    {", ".join(f"{c} = excluded.{c}" for c in _VALUES)}
WHERE {" OR ".join(f"{ACTIONS_TABLE}.{c} IS DISTINCT FROM excluded.{c}" for c in _VALUES)}
"""
MERGE_ACTIONS_SQL = f"""
MERGE INTO {ACTIONS_TABLE} AS stored USING incoming_actions AS incoming
ON {" AND ".join(f"stored.{c} = incoming.{c}" for c in KEY_COLUMNS)}
WHEN MATCHED AND ({" OR ".join(f"stored.{c} IS DISTINCT FROM incoming.{c}" for c in _VALUES)})
    THEN UPDATE SET {", ".join(f"{c} = incoming.{c}" for c in _VALUES)}
WHEN NOT MATCHED THEN INSERT ({_LIST})
    VALUES ({", ".join(f"incoming.{c}" for c in ACTIONS_COLUMNS)})
"""
# A stored event of a complete kind that the symbol's answer no longer mentions has vanished.
_VANISHED = f"""
EXISTS (
    SELECT 1 FROM complete_kinds AS c
    WHERE c.symbol = {ACTIONS_TABLE}.symbol AND c.kind = {ACTIONS_TABLE}.kind
) AND NOT EXISTS (
    SELECT 1 FROM answered_actions AS a
    WHERE a.symbol = {ACTIONS_TABLE}.symbol AND a.kind = {ACTIONS_TABLE}.kind
      AND a.ex_date = {ACTIONS_TABLE}.ex_date
)
"""
DELETE_VANISHED_SQL = f"DELETE FROM {ACTIONS_TABLE} WHERE {_VANISHED}"
SELECT_VANISHED_SQL = f"SELECT symbol, ex_date, kind FROM {ACTIONS_TABLE} WHERE {_VANISHED}"
COUNT_ACTIONS_SQL = f"SELECT count(*) FROM {ACTIONS_TABLE}"
_STORED_EX_DATES_SQL = f"SELECT symbol, ex_date FROM {ACTIONS_TABLE} WHERE list_contains(?, symbol)"


def iso_date(column: str) -> pl.Expr:
    """The ISO date, or null; the pattern first, since the parser takes "87-06-16" as year 87."""
    text = pl.col(column).str.strip_chars()
    iso = text.str.contains(r"^\d{4}-\d{2}-\d{2}$")
    return pl.when(iso).then(text.str.to_date("%Y-%m-%d", strict=False))


def answered(events: pl.DataFrame, rejects: pl.DataFrame) -> pl.DataFrame:
    """Every (symbol, ex_date, kind) an answer mentions with a readable ex-date, accepted or
    rejected: the stored events a load must keep (a bad row never deletes one)."""
    mentioned = rejects.select("symbol", iso_date("ex_date").alias("ex_date"), "kind")
    keys = [events.select(KEY_COLUMNS), mentioned.drop_nulls("ex_date")]
    return pl.concat([k.cast(KEY_SCHEMA) for k in keys], how="vertical").unique()  # type: ignore[arg-type]


def actions_frames(results: Sequence[SymbolActions]) -> dict[str, pl.DataFrame]:
    """The three relations an actions load reads, typed for DuckDB (empty ones too), whichever
    store takes them: ``incoming_actions``, ``answered_actions``, ``complete_kinds``."""
    symbols = [r.symbol for r in results]
    if len(set(symbols)) != len(symbols):
        raise ValueError(f"symbols given twice in one load_actions: {sorted(symbols)}")
    events = [r.events.select(ACTIONS_COLUMNS).cast(EVENT_SCHEMA) for r in results]  # type: ignore[arg-type]
    for frame in events:  # DuckDB would apply one of the copies silently
        twice = frame.filter(frame.select(KEY_COLUMNS).is_duplicated())
        if not twice.is_empty():
            symbol, ex_date, kind = twice.row(0)[:3]
            raise ValueError(f"{symbol}: the {ex_date} {kind} is given twice in one load_actions")
    keys = [answered(r.events, r.rejects) for r in results]
    complete = [(r.symbol, kind) for r in results for kind in sorted(r.complete_kinds)]
    return {
        "incoming_actions": pl.concat([pl.DataFrame(schema=EVENT_SCHEMA), *events]),
        "answered_actions": pl.concat([pl.DataFrame(schema=KEY_SCHEMA), *keys]),
        "complete_kinds": pl.DataFrame(
            complete, schema={"symbol": pl.String, "kind": pl.String}, orient="row"
        ),
    }


def upsert_actions(
    conn: duckdb.DuckDBPyConnection, results: Sequence[SymbolActions]
) -> ActionsLoadStats:
    """The file's load: each symbol's events upserted and its vanished ones deleted, in one
    transaction, rolled back on any error. Deletes first: a deleted key is never upserted."""
    frames = {name: frame.to_arrow() for name, frame in actions_frames(results).items()}
    conn.begin()
    try:
        conn.execute(CREATE_ACTIONS_SQL)
        for name, table in frames.items():
            conn.register(name, table)
        deleted = conn.execute(f"{DELETE_VANISHED_SQL} RETURNING symbol, ex_date, kind").fetchall()
        inserted, updated = _write(conn, UPSERT_ACTIONS_SQL)
        for name in frames:
            conn.unregister(name)
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return load_stats(deleted, inserted, updated)


def merge_actions(
    conn: duckdb.DuckDBPyConnection,
) -> tuple[list[tuple[str, dt.date, str]], int, int]:
    """The lake's load, inside the caller's transaction: (vanished, inserted, updated) for the
    registered ``actions_frames`` relations. Deletes first, as in the file."""
    vanished = [(str(s), d, str(k)) for s, d, k in conn.execute(SELECT_VANISHED_SQL).fetchall()]
    if vanished:
        conn.execute(DELETE_VANISHED_SQL)
    inserted, updated = _write(conn, MERGE_ACTIONS_SQL)
    return vanished, inserted, updated


def _write(conn: duckdb.DuckDBPyConnection, sql: str) -> tuple[int, int]:
    """(inserted, updated) by ``sql``: the table's growth tells new rows from revised ones."""
    before = _count(conn, COUNT_ACTIONS_SQL)
    affected = _count(conn, sql)
    inserted = _count(conn, COUNT_ACTIONS_SQL) - before
    return inserted, affected - inserted


def load_stats(
    deleted: Sequence[tuple[str, dt.date, str]], inserted: int, updated: int
) -> ActionsLoadStats:
    """A load's counts, each deleted (symbol, ex_date, kind) named under its symbol."""
    by_symbol: dict[str, list[str]] = {}
    for symbol, ex_date, kind in sorted(deleted):
        by_symbol.setdefault(symbol, []).append(f"{ex_date.isoformat()} {kind}")
    return ActionsLoadStats(
        inserted=inserted, updated=updated, deleted=len(deleted), deleted_by_symbol=by_symbol
    )


def _count(conn: duckdb.DuckDBPyConnection, sql: str) -> int:
    return int(conn.execute(sql).fetchall()[0][0])


def stored_ex_dates(
    conn: duckdb.DuckDBPyConnection, symbols: Sequence[str]
) -> dict[str, set[dt.date]]:
    """Each symbol's ex-dates in ``corporate_actions`` on ``conn`` (the file's or the lake's)."""
    stored: dict[str, set[dt.date]] = {}
    for symbol, ex_date in conn.execute(_STORED_EX_DATES_SQL, [list(symbols)]).fetchall():
        stored.setdefault(symbol, set()).add(ex_date)
    return stored


def stored_ex_dates_in_file(path: Path, symbols: Sequence[str]) -> dict[str, set[dt.date]]:
    """The DuckDB file's ex-dates, through a read-only connection: it needs no write lock, so
    it never makes the API let go of the file."""
    if not symbols or not path.exists():
        return {}
    try:
        with duckdb.connect(str(path), read_only=True) as conn:
            return stored_ex_dates(conn, symbols)
    except duckdb.Error:  # no table yet, or another process writes the file right now
        return {}
