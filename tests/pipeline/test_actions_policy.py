"""The corporate-actions refresh policy, as plain values: when a symbol's actions are due, why,
and in which order a short quota serves them."""

from __future__ import annotations

import datetime as dt

from market_pipeline.actions.policy import (
    REFRESH_AFTER,
    Why,
    actions_due,
    affordable,
    due_symbols,
    unexplained,
)

NOW = dt.datetime(2026, 11, 30, 23, 45, tzinfo=dt.UTC)
MOVE = dt.date(2026, 11, 27)


def test_due_on_the_first_load_then_weekly() -> None:
    first = actions_due("AAA", None, NOW)
    assert first is not None and first.why is Why.FIRST_LOAD
    assert actions_due("AAA", NOW - dt.timedelta(days=6, hours=23), NOW) is None
    weekly = actions_due("AAA", NOW - REFRESH_AFTER, NOW)
    assert weekly is not None and weekly.why is Why.WEEKLY
    assert "7 days ago" in weekly.detail


def test_an_unexplained_move_after_the_last_fetch_is_due_at_once() -> None:
    fetched = dt.datetime(2026, 11, 26, 22, 0, tzinfo=dt.UTC)  # the evening before the move
    due = actions_due("AAA", fetched, NOW, [MOVE])
    assert due is not None and due.why is Why.UNEXPLAINED_MOVE
    assert "2026-11-27" in due.detail


def test_a_fetch_after_the_move_has_answered_it_and_costs_no_more_calls() -> None:
    after = dt.datetime(2026, 11, 28, 1, 0, tzinfo=dt.UTC)
    assert actions_due("AAA", after, NOW, [MOVE]) is None
    on_the_day = dt.datetime(2026, 11, 27, 23, 0, tzinfo=dt.UTC)  # maybe before the close
    assert actions_due("AAA", on_the_day, NOW, [MOVE]) is not None


def test_known_actions_explain_moves_on_their_ex_date_only() -> None:
    moves = [dt.date(2024, 6, 10), MOVE, dt.date(2024, 6, 10)]
    assert unexplained(moves, {dt.date(2024, 6, 10)}) == (MOVE,)
    assert unexplained(moves, {dt.date(2024, 6, 11)}) == (dt.date(2024, 6, 10), MOVE)
    assert unexplained([], set()) == ()


def test_most_urgent_first_and_the_quota_takes_two_calls_each() -> None:
    last = {
        "OLD": NOW - dt.timedelta(days=30),
        "NEW": None,
        "WEEK": NOW - dt.timedelta(days=8),
        "FRESH": NOW - dt.timedelta(days=1),
        "MOVED": NOW - dt.timedelta(days=5),
    }
    moves = {"MOVED": [MOVE], "FRESH": [dt.date(2020, 1, 2)]}
    order = due_symbols(["WEEK", "FRESH", "OLD", "NEW", "MOVED"], last, NOW, moves)
    assert [d.symbol for d in order] == ["MOVED", "NEW", "OLD", "WEEK"]
    assert affordable(None, 4) == 4
    assert affordable(5, 4) == 2
    assert affordable(1, 4) == 0
    assert affordable(100, 4) == 4
