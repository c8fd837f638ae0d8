"""clean_data and ohlcv_data follow raw_data: the eager conditions evaluated on real runs."""

from __future__ import annotations

import pytest
from dagster import AssetKey, DagsterInstance, evaluate_automation_conditions

from market_pipeline.definitions import defs
from tests.conftest import Run
from tests.stubs.alpha_vantage import AlphaVantageStub

CLEAN, OHLCV = AssetKey("clean_data"), AssetKey("ohlcv_data")
pytestmark = pytest.mark.filterwarnings("ignore::dagster.BetaWarning")  # the tester's own use


def test_raw_data_alone_is_followed_and_a_full_run_is_not_repeated(
    keyed: AlphaVantageStub, run: Run, instance: DagsterInstance
) -> None:
    location = defs()
    instance.add_dynamic_partitions("symbols", ["A", "B", "C"])
    tick = evaluate_automation_conditions(defs=location, instance=instance)
    assert tick.total_requested == 0, "nothing to follow before any raw_data"

    assert run(["A", "B", "C"]).success  # all three stages in one step
    tick = evaluate_automation_conditions(defs=location, instance=instance, cursor=tick.cursor)
    assert tick.total_requested == 0, "the run already cleaned and loaded what it fetched"

    assert run(["B"], selection=["raw_data"]).success  # as from the UI: raw_data alone
    tick = evaluate_automation_conditions(defs=location, instance=instance, cursor=tick.cursor)
    assert tick.get_requested_partitions(CLEAN) == {"B"}
    assert tick.get_requested_partitions(OHLCV) == {"B"}

    tick = evaluate_automation_conditions(defs=location, instance=instance, cursor=tick.cursor)
    assert tick.total_requested == 0, "requested once, not on every tick"
