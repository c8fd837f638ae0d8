"""The session findings read from the shared lake (a real PostgreSQL catalog) equal the file's
on the same bars and listings."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from market_core.home import DataHome
from market_core.lake import connect
from market_core.sessions import sessions_between
from market_pipeline.daily.completeness import (
    BEFORE_LISTING,
    MISSING_SESSIONS,
    NOT_A_SESSION,
    Finding,
    stored_session_report,
)
from market_pipeline.store.duckdb_file import DuckDBFileStore
from market_pipeline.store.lake import LakeStore
from tests.cluster.services import PostgresService

pytestmark = pytest.mark.cluster

LISTINGS = """
CREATE TABLE IF NOT EXISTS listings (
    symbol VARCHAR, name VARCHAR, exchange VARCHAR, asset_type VARCHAR, ipo_date DATE,
    delisting_date DATE, status VARCHAR, first_seen DATE, last_seen DATE
)
"""
LISTING = "INSERT INTO listings VALUES ('AAA', '', 'NYSE', 'Stock', ?, NULL, 'active', ?, ?)"


def bars(symbol: str, days: list[dt.date]) -> pl.DataFrame:
    n = len(days)
    return pl.DataFrame(
        {"timestamp": [dt.datetime.combine(d, dt.time()) for d in days], "symbol": [symbol] * n,
         "open": [10.0] * n, "high": [11.0] * n, "low": [9.0] * n, "close": [10.5] * n,
         "volume": [100] * n},
        schema_overrides={"volume": pl.Int64},
    )  # fmt: skip


def test_the_lake_s_findings_are_the_file_s(
    postgres: PostgresService, tmp_path: Path, home: DataHome
) -> None:
    lake = LakeStore(postgres.fresh_database(), str(tmp_path / "shared"), str(tmp_path / "a"))
    home.root.mkdir(parents=True, exist_ok=True)
    file = DuckDBFileStore(home.duckdb_path)
    days = sessions_between(dt.date(2024, 10, 1), dt.date(2024, 11, 29))
    frames = [
        bars("AAA", [d for d in days if d != dt.date(2024, 11, 4)] + [dt.date(2024, 11, 2)]),
        bars("BBB", days),
    ]
    ipo = dt.date(2024, 10, 15)
    for store in (file, lake):
        store.load(frames)
    without = stored_session_report(lake)
    assert without == stored_session_report(file)
    assert without.findings[MISSING_SESSIONS] == {"AAA": Finding(1, (dt.date(2024, 11, 4),))}
    assert without.findings[NOT_A_SESSION] == {"AAA": Finding(1, (dt.date(2024, 11, 2),))}

    conn = connect(lake.settings)
    try:
        conn.execute(LISTINGS)
        conn.execute(LISTING, [ipo, ipo, ipo])
    finally:
        conn.close()
    with file.write_connection() as conn:
        conn.execute(LISTINGS)
        conn.execute(LISTING, [ipo, ipo, ipo])

    listed = stored_session_report(lake)
    assert listed == stored_session_report(file)
    assert listed.symbols_with_listing == 1
    early = [d for d in days if d < ipo]
    assert listed.findings[BEFORE_LISTING] == {"AAA": Finding(len(early), tuple(early[:5]))}
