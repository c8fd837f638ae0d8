"""The planner's decisions, from plain numbers: which symbols are cleaned together, which are
loaded together, and when a batch stops waiting for company."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from market_pipeline.bars.rules import Rules
from market_pipeline.runs.plan import BatchSettings, CleanBatch, LoadBatch, Planner


def settings(**sizes: float) -> BatchSettings:
    return BatchSettings(outputsize="compact", rules=Rules(), **sizes)  # type: ignore[arg-type]


def names(count: int) -> list[str]:
    return [f"S{i:03d}" for i in range(count)]


def run_plan(
    planner: Planner, rows: Mapping[str, int], now: float = 0.0, fail: Sequence[str] = ()
) -> tuple[list[CleanBatch], list[LoadBatch]]:
    """What the executor does with a fast source: every symbol fetched at ``now``, the ones in
    ``fail`` failing to clean."""
    cleans: list[CleanBatch] = []
    loads: list[LoadBatch] = []

    def clean(batch: CleanBatch) -> None:
        cleans.append(batch)
        cleaned = {s: rows[s] for s in batch.symbols if s not in fail}
        loads.extend(planner.cleaned(batch, cleaned, now))

    for symbol in rows:
        planner.fetched(symbol, now)
        if (batch := planner.clean_due(now)) is not None:
            clean(batch)
    if (batch := planner.rest_clean()) is not None:
        clean(batch)
    if (load := planner.rest_load()) is not None:
        loads.append(load)
    return cleans, loads


def test_clean_batches_hold_clean_batch_symbols_and_the_rest_goes_last() -> None:
    symbols = names(250)
    cleans, _ = run_plan(Planner(settings(clean_batch_symbols=100)), dict.fromkeys(symbols, 10))
    assert [len(b.symbols) for b in cleans] == [100, 100, 50]
    assert [s for b in cleans for s in b.symbols] == symbols


def test_a_slow_source_cleans_what_it_has_once_the_first_symbol_waited_long_enough() -> None:
    planner = Planner(settings(clean_batch_symbols=100, load_batch_seconds=10))
    planner.fetched("A", now=100.0)
    planner.fetched("B", now=104.0)
    assert planner.clean_due(now=109.9) is None
    batch = planner.clean_due(now=110.0)
    assert batch == CleanBatch(("A", "B"), since=100.0)
    assert planner.clean_due(now=200.0) is None, "nothing left waiting"
    planner.fetched("C", now=200.0)
    assert planner.clean_due(now=205.0) is None, "the clock restarts with the next symbol"


def test_a_daily_update_is_one_load_batch() -> None:
    """1000 symbols x 100 bars: ten clean batches, one transaction at the end."""
    planner = Planner(settings())
    cleans, loads = run_plan(planner, dict.fromkeys(names(1000), 100))
    assert len(cleans) == 10
    assert loads == [LoadBatch(tuple(names(1000)), 100_000)]


def test_load_batches_stay_within_the_row_bound_and_close_as_soon_as_full() -> None:
    rows = dict(zip(names(7), [40, 40, 30, 50, 100, 10, 5], strict=True))
    _, loads = run_plan(Planner(settings(clean_batch_symbols=3, load_batch_rows=100)), rows)
    assert [b.rows for b in loads] == [80, 80, 100, 15]
    assert [b.symbols for b in loads] == [
        ("S000", "S001"), ("S002", "S003"), ("S004",), ("S005", "S006"),
    ]  # fmt: skip
    assert all(b.rows == sum(rows[s] for s in b.symbols) for b in loads)


def test_a_symbol_bigger_than_the_row_bound_is_loaded_alone() -> None:
    rows = {"A": 10, "B": 900, "C": 10}
    _, loads = run_plan(Planner(settings(load_batch_rows=100)), rows)
    assert [b.symbols for b in loads] == [("A",), ("B",), ("C",)]


def test_load_batches_are_bounded_by_symbols() -> None:
    symbols = names(25)
    _, loads = run_plan(
        Planner(settings(clean_batch_symbols=7, load_batch_symbols=10)), dict.fromkeys(symbols, 1)
    )
    assert [len(b.symbols) for b in loads] == [10, 10, 5]
    assert [s for b in loads for s in b.symbols] == symbols, "every symbol once, in order"


def test_symbols_that_failed_to_clean_are_never_loaded() -> None:
    rows = dict.fromkeys(names(10), 5)
    failed = ["S002", "S007"]
    _, loads = run_plan(Planner(settings(clean_batch_symbols=4)), rows, fail=failed)
    loaded = [s for b in loads for s in b.symbols]
    assert loaded == [s for s in rows if s not in failed]
    assert sum(b.rows for b in loads) == 40


def test_a_load_batch_waits_for_more_symbols_until_its_oldest_has_waited_long_enough() -> None:
    planner = Planner(settings(load_batch_seconds=10))
    first = CleanBatch(("A", "B"), since=0.0)
    assert planner.cleaned(first, {"A": 5, "B": 5}, now=3.0) == []
    second = CleanBatch(("C",), since=6.0)
    assert planner.cleaned(second, {"C": 5}, now=9.9) == []
    third = CleanBatch(("D",), since=9.9)
    assert planner.cleaned(third, {"D": 5}, now=10.0) == [LoadBatch(("A", "B", "C", "D"), 20)]
    assert planner.rest_load() is None


def test_the_wait_of_a_load_batch_starts_with_its_oldest_symbol() -> None:
    """After a batch closes on rows, the symbols left over start the next batch's clock."""
    planner = Planner(settings(load_batch_rows=10, load_batch_seconds=10))
    due = planner.cleaned(CleanBatch(("A", "B"), since=0.0), {"A": 10, "B": 1}, now=1.0)
    assert due == [LoadBatch(("A",), 10)]
    assert planner.cleaned(CleanBatch(("C",), since=8.0), {"C": 1}, now=9.0) == []
    assert planner.cleaned(CleanBatch(("D",), since=9.0), {"D": 1}, now=10.0) == [
        LoadBatch(("B", "C", "D"), 3)
    ]


def test_a_batch_where_every_symbol_failed_loads_nothing() -> None:
    planner = Planner(settings(load_batch_seconds=0))
    assert planner.cleaned(CleanBatch(("A", "B"), since=0.0), {}, now=100.0) == []
    assert planner.rest_load() is None
