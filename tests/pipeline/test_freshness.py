"""The freshness check on ohlcv_data: a symbol behind the last NYSE session (after the grace)
fails it, by name, through a real Dagster run on a DuckDB file; and the pure due-session rule."""

from __future__ import annotations

import datetime as dt

from dagster import DagsterInstance

from market_core.exchange import EXCHANGE_TZ
from market_core.home import DataHome
from market_pipeline.daily.freshness import due_session
from market_pipeline.definitions import defs
from market_pipeline.defs.freshness import FRESHNESS_CHECK, FRESHNESS_JOB
from market_pipeline.defs.partitions import PARTITIONS
from tests.api.writer import load


def bar(symbol: str, day: dt.date) -> tuple[object, ...]:
    return (dt.datetime.combine(day, dt.time()), symbol, 10.0, 11.0, 9.0, 10.5, 1000)


def run_check(instance: DagsterInstance, symbols: list[str]) -> dict[str, object]:
    instance.add_dynamic_partitions(PARTITIONS, symbols)
    result = defs().resolve_job_def(FRESHNESS_JOB).execute_in_process(instance=instance)
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.check_name == FRESHNESS_CHECK
    return {"passed": evaluation.passed,
            **{k: v.value for k, v in evaluation.metadata.items()}}  # fmt: skip


def test_a_symbol_behind_the_last_session_fails_the_check_by_name(
    home: DataHome, instance: DagsterInstance
) -> None:
    due = due_session(dt.datetime.now(dt.UTC))
    load(home, [bar("AAA", due), bar("BBB", due - dt.timedelta(days=10))])
    found = run_check(instance, ["AAA", "BBB", "CCC"])
    assert found["passed"] is False
    assert found["due_session"] == due.isoformat()
    assert found["stale_symbols"] == {
        "BBB": (due - dt.timedelta(days=10)).isoformat(),
        "CCC": None,
    }
    assert (found["stale"], found["fresh"]) == (2, 1)


def test_symbols_with_the_last_session_pass(home: DataHome, instance: DagsterInstance) -> None:
    due = due_session(dt.datetime.now(dt.UTC))
    load(home, [bar("AAA", due), bar("BBB", due)])
    found = run_check(instance, ["AAA", "BBB"])
    assert found["passed"] is True
    assert (found["stale"], found["fresh"]) == (0, 2)


def ny(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=EXCHANGE_TZ)


def test_the_due_session_waits_for_the_grace_and_skips_holidays() -> None:
    assert due_session(ny("2024-07-03 16:59")) == dt.date(2024, 7, 2), "early close 13:00 + 4 h"
    assert due_session(ny("2024-07-03 17:00")) == dt.date(2024, 7, 3)
    assert due_session(ny("2024-07-05 19:59")) == dt.date(2024, 7, 3), "July 4th is closed"
    assert due_session(ny("2024-07-05 20:00")) == dt.date(2024, 7, 5)
    assert due_session(ny("2024-07-07 12:00")) == dt.date(2024, 7, 5), "a Sunday: Friday"
    assert due_session(ny("2024-07-08 08:00")) == dt.date(2024, 7, 5)
