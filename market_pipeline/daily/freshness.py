"""Which symbols are behind: a symbol whose newest bar is older than the last NYSE session that
closed at least ``GRACE`` ago. Plain Python; the Dagster check is ``defs/freshness.py``, the
why of the grace is in docs/metrics.md ("Freshness")."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import duckdb

from market_core.lake import LakeError
from market_core.schema import TABLE
from market_core.sessions import exchange_time, previous_session, session
from market_pipeline.daily.completeness import ReportUnavailable, read_only
from market_pipeline.store.duckdb_file import DuckDBFileStore
from market_pipeline.store.lake import LakeStore

GRACE = dt.timedelta(hours=4)
"""After a session's close (16:00 New York) Alpha Vantage has the day's bar within a few hours;
from 20:00 on, a symbol without it is late."""

_NEWEST_SQL = f"SELECT symbol, CAST(max(timestamp) AS DATE) FROM {TABLE} GROUP BY symbol"


@dataclass(frozen=True)
class Staleness:
    due: dt.date
    """The session every symbol should have a bar of by now."""
    stale: dict[str, dt.date | None]
    """Symbol -> its newest bar's date (``None``: no bar at all), for the symbols behind."""
    fresh: int


def due_session(now: dt.datetime, grace: dt.timedelta = GRACE) -> dt.date:
    """The newest session that closed at least ``grace`` before ``now`` (aware, or naive New
    York time)."""
    local = exchange_time(now)
    today = session(local.date())
    if today is not None and local >= today.closes + grace:
        return today.day
    found = previous_session(local.date())
    while local < found.closes + grace:
        found = previous_session(found.day)
    return found.day


def staleness(symbols: Iterable[str], newest: Mapping[str, dt.date], due: dt.date) -> Staleness:
    """The ``symbols`` whose newest bar (``newest``) is before ``due``."""
    stale: dict[str, dt.date | None] = {}
    fresh = 0
    for symbol in sorted(set(symbols)):
        last = newest.get(symbol)
        if last is None or last < due:
            stale[symbol] = last
        else:
            fresh += 1
    return Staleness(due, stale, fresh)


def newest_bars(store: DuckDBFileStore | LakeStore) -> dict[str, dt.date]:
    """Every stored symbol's newest daily bar; ``ReportUnavailable`` if the store cannot be
    read now."""
    try:
        with read_only(store) as conn:
            if conn is None:
                return {}
            return dict(conn.execute(_NEWEST_SQL).fetchall())
    except (duckdb.Error, LakeError) as exc:
        raise ReportUnavailable(f"{store.database} cannot be read: {exc}") from exc
