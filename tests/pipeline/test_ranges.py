"""How ``make ingest`` cuts the wanted symbols into the partition ranges its runs cover."""

from __future__ import annotations

import pytest

from market_pipeline.defs.partitions import RUN_MIN_SYMBOLS, contiguous_blocks, split_block


def test_wanted_symbols_form_the_fewest_contiguous_ranges_of_the_registered_order() -> None:
    registered = ["A", "B", "C", "D", "E", "F"]
    assert contiguous_blocks(registered, {"A", "B", "D", "F", "Z"}) == [["A", "B"], ["D"], ["F"]]
    assert contiguous_blocks(registered, set(registered)) == [registered]
    assert contiguous_blocks(registered, set()) == []


@pytest.mark.parametrize(("size", "places", "expected"), [
    (1000, 4, [250, 250, 250, 250]),
    (1001, 4, [251, 250, 250, 250]),
    (1000, 1, [1000]),
    (60, 4, [30, 30]),  # no run below RUN_MIN_SYMBOLS
    (2, 4, [2]),
    (RUN_MIN_SYMBOLS * 2, 2, [RUN_MIN_SYMBOLS, RUN_MIN_SYMBOLS]),
])  # fmt: skip
def test_a_range_splits_into_near_equal_contiguous_ranges_one_per_place(
    size: int, places: int, expected: list[int]
) -> None:
    block = [f"S{n:04d}" for n in range(size)]
    parts = split_block(block, places)
    assert [len(part) for part in parts] == expected
    assert [key for part in parts for key in part] == block, "in order, each key once"
