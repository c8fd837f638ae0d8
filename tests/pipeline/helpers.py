"""Small readers shared by the pipeline tests."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import duckdb
import pytest
from dagster import ExecuteInProcessResult, build_resources
from pyrate_limiter import RateItem

from market_core.home import DataHome
from market_pipeline.defs.resources import resources_from_env
from market_pipeline.defs.settings import configuration_problems
from market_pipeline.source.rate_limit import DAY_BUCKET, day_rate, open_bucket
from tests.conftest import TEST_KEY


def table_rows(home: DataHome, symbol: str | None = None) -> list[tuple[object, ...]]:
    if not home.duckdb_path.exists():
        return []
    with duckdb.connect(str(home.duckdb_path), read_only=True) as conn:
        where, params = ("WHERE symbol = ?", [symbol]) if symbol else ("", [])
        return conn.execute(
            f"SELECT * FROM ohlcv_data {where} ORDER BY symbol, timestamp", params
        ).fetchall()


def failure_text(result: ExecuteInProcessResult) -> str:
    """Every step failure's message, with its causes."""
    texts = []
    for event in result.all_events:
        error = event.step_failure_data.error if event.is_step_failure else None
        while error is not None:
            texts.append(error.message + "".join(error.stack))
            error = error.cause
    return "\n".join(texts)


def recent_bars(count: int, start_price: float = 100.0) -> list[tuple[str, dict[str, str]]]:
    """Valid weekday bars, oldest first, ending on the last weekday before today."""
    day = dt.date.today() - dt.timedelta(days=1)
    days: list[dt.date] = []
    while len(days) < count:
        if day.weekday() < 5:
            days.append(day)
        day -= dt.timedelta(days=1)
    bars = []
    for i, d in enumerate(reversed(days)):
        price = start_price + i * 0.5
        bars.append((d.isoformat(), {
            "1. open": f"{price:.4f}", "2. high": f"{price + 2:.4f}",
            "3. low": f"{price - 2:.4f}", "4. close": f"{price + 1:.4f}",
            "5. volume": str(1_000_000 + i),
        }))  # fmt: skip
    return bars


def materialized(result: ExecuteInProcessResult, asset: str) -> set[str]:
    return {
        e.partition
        for e in result.get_asset_materialization_events()
        if e.asset_key.to_user_string() == asset and e.partition
    }


def snapshot(paths: list[Path]) -> dict[Path, bytes | None]:
    return {p: p.read_bytes() if p.exists() else None for p in paths}


def spend(home: DataHome, per_day: int, stamps_ms: Sequence[int]) -> list[float]:
    """Calls made earlier (yesterday's update): permits written into the key's real bucket.

    Returns their times in seconds, to count beside the stub's own.
    """
    bucket = open_bucket(home.state_dir, TEST_KEY, DAY_BUCKET, [day_rate(per_day)])
    try:
        for stamp in stamps_ms:
            assert bucket.put(RateItem("EARLIER", stamp))
    finally:
        bucket.close()
    return [stamp / 1000 for stamp in stamps_ms]


def resolution_problem(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> str:
    """The one configuration problem resolving the resources reports with ``variable=value``."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(Exception) as failed, build_resources(resources_from_env()):
        pass
    [problem] = configuration_problems(failed.value) or []
    return problem
