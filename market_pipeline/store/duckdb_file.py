"""Where the pipeline keeps its files, and its only way to write the DuckDB file.

Parquet files are replaced atomically (``market_core.atomic``), so a crash mid-write leaves the
previous file readable.
``MarketDuckDB`` is dagster-duckdb's ``DuckDBResource`` plus the write hand-off with the API
(``market_core.handoff``): the file implementation of ``market_core.store.StoreWriter``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator, Sequence
from pathlib import Path

import duckdb
import polars as pl
from dagster_duckdb import DuckDBResource

from market_core.atomic import write_atomic
from market_core.handoff import WriteHandoff, exclusive_write
from market_core.home import DataHome
from market_core.schema import (
    ACTIONS_COLUMNS,
    ACTIONS_TABLE,
    CREATE_ACTIONS_SQL,
    CREATE_CHANGES_SQL,
    CREATE_COMMITS_SQL,
    CREATE_TABLE_SQL,
)
from market_core.store import ActionsLoadStats, LoadStats, SymbolActions
from market_pipeline.actions.known import stored_ex_dates_in_file
from market_pipeline.actions.rules import EVENT_SCHEMA, KEY_COLUMNS, KEY_SCHEMA, answered
from market_pipeline.store.bars import upsert
from market_pipeline.store.intraday import upsert_intraday

_ACTION_VALUES = tuple(c for c in ACTIONS_COLUMNS if c not in KEY_COLUMNS)
_ACTIONS_LIST = ", ".join(ACTIONS_COLUMNS)
UPSERT_ACTIONS_SQL = f"""
INSERT INTO {ACTIONS_TABLE} ({_ACTIONS_LIST})
SELECT {_ACTIONS_LIST} FROM incoming_actions
ON CONFLICT (symbol, ex_date, kind) DO UPDATE SET
    {", ".join(f"{c} = excluded.{c}" for c in _ACTION_VALUES)}
WHERE {" OR ".join(f"{ACTIONS_TABLE}.{c} IS DISTINCT FROM excluded.{c}" for c in _ACTION_VALUES)}
"""
# A stored event of a complete kind that the symbol's answer no longer mentions has vanished.
DELETE_VANISHED_SQL = f"""
DELETE FROM {ACTIONS_TABLE} AS stored
WHERE EXISTS (
    SELECT 1 FROM complete_kinds AS c WHERE c.symbol = stored.symbol AND c.kind = stored.kind
) AND NOT EXISTS (
    SELECT 1 FROM answered_actions AS a
    WHERE a.symbol = stored.symbol AND a.kind = stored.kind AND a.ex_date = stored.ex_date
)
RETURNING symbol, ex_date, kind
"""
COUNT_ACTIONS_SQL = f"SELECT count(*) FROM {ACTIONS_TABLE}"


def write_parquet_atomic(frame: pl.DataFrame, path: Path) -> None:
    # zstd level 1: files a fifth bigger than the default level 3, a quarter less CPU.
    write_atomic(
        path,
        lambda tmp: frame.write_parquet(
            tmp, compression="zstd", compression_level=1, statistics=True
        ),
    )


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
    """Each symbol's events upserted and its vanished ones deleted, in one transaction; roll
    back on any error. Deletes first: a deleted key is never one being upserted."""
    frames = {name: frame.to_arrow() for name, frame in actions_frames(results).items()}
    conn.begin()
    try:
        conn.execute(CREATE_ACTIONS_SQL)
        for name, table in frames.items():
            conn.register(name, table)
        deleted = conn.execute(DELETE_VANISHED_SQL).fetchall()
        before = _count(conn, COUNT_ACTIONS_SQL)
        affected = _count(conn, UPSERT_ACTIONS_SQL)
        inserted = _count(conn, COUNT_ACTIONS_SQL) - before
        for name in frames:
            conn.unregister(name)
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return ActionsLoadStats(
        inserted=inserted,
        updated=affected - inserted,
        deleted=len(deleted),
        deleted_by_symbol=vanished_by_symbol(deleted),
    )


def vanished_by_symbol(deleted: Sequence[tuple[str, dt.date, str]]) -> dict[str, list[str]]:
    """The deleted (symbol, ex_date, kind) keys as ``ActionsLoadStats.deleted_by_symbol``."""
    by_symbol: dict[str, list[str]] = {}
    for symbol, ex_date, kind in sorted(deleted):
        by_symbol.setdefault(symbol, []).append(f"{ex_date.isoformat()} {kind}")
    return by_symbol


def _count(conn: duckdb.DuckDBPyConnection, sql: str) -> int:
    return int(conn.execute(sql).fetchall()[0][0])


class MarketDuckDB(DuckDBResource):
    """The DuckDB file of a data home (``ohlcv_data``, ``corporate_actions``): the pipeline's
    ``StoreWriter``.

    Read-write connections are short-lived on purpose: while one is open the API cannot read
    the file, so it serves from its cache. Each is held under the write lock
    (``market_core.handoff``), so that the API lets go of the file and loaders take turns.
    """

    @property
    def home(self) -> DataHome:
        return DataHome.from_env(Path(self.database).parent)

    @contextlib.contextmanager
    def _session(self) -> Iterator[tuple[duckdb.DuckDBPyConnection, WriteHandoff]]:
        with exclusive_write(self.home) as handoff, self.get_connection() as conn:
            try:
                conn.execute(CREATE_TABLE_SQL)
                conn.execute(CREATE_CHANGES_SQL)
                conn.execute(CREATE_COMMITS_SQL)
                yield conn, handoff
            finally:
                conn.close()

    @contextlib.contextmanager
    def write_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-write connection for work other than ``load`` (benchmarks, maintenance).

        Readers are told of a new data version afterwards, whatever the caller did."""
        with self._session() as (conn, handoff):
            yield conn
            conn.close()
            handoff.finish(changed=True)

    def load(self, frames: Sequence[pl.DataFrame]) -> LoadStats:
        """Upsert ``frames`` (clean bars) in one transaction and tell readers if rows changed."""
        with self._session() as (conn, handoff):
            stats = upsert(conn, list(frames))
            conn.close()  # checkpoint now, under the lock, so the record sees the file as left
            handoff.finish(changed=bool(stats.inserted or stats.updated))
        return stats

    def load_intraday(self, frames: Sequence[pl.DataFrame]) -> LoadStats:
        """Upsert ``frames`` (clean intraday bars) into ``ohlcv_intraday`` in one transaction
        (``intraday_load.upsert_intraday``) and tell readers if rows changed."""
        with self._session() as (conn, handoff):
            stats = upsert_intraday(conn, frames)
            conn.close()  # checkpoint now, under the lock, so the record sees the file as left
            handoff.finish(changed=bool(stats.inserted or stats.updated))
        return stats

    def stored_ex_dates(self, symbols: Sequence[str]) -> dict[str, set[dt.date]]:
        """Each symbol's ex-dates in ``corporate_actions`` (``stored_ex_dates_in_file``)."""
        return stored_ex_dates_in_file(Path(self.database), symbols)

    def load_actions(self, results: Sequence[SymbolActions]) -> ActionsLoadStats:
        """Make each symbol's stored corporate actions its latest answer, in one transaction
        (``upsert_actions``), and tell readers if any event changed: cached adjusted prices
        computed with the old factors are then stale."""
        with self._session() as (conn, handoff):
            stats = upsert_actions(conn, results)
            conn.close()  # checkpoint now, under the lock, so the record sees the file as left
            handoff.finish(changed=stats.changed)
        return stats
