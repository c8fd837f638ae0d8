"""The data home's Dagster instance: its config is valid for this Dagster and limits the pool."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import QueuedRunCoordinator
from filelock import FileLock

from market_core.home import DataHome
from market_pipeline.cli.instance import LOCK_NAME, InstanceBusyError, open_instance
from market_pipeline.defs.daily import symbol_pipeline
from market_pipeline.defs.outcomes import ALPHA_VANTAGE_POOL


def test_the_instance_lives_in_the_data_home_and_queues_runs_one_pool_slot_at_a_time(
    home: DataHome,
) -> None:
    with open_instance() as instance:
        assert Path(instance.root_directory) == home.dagster_home
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        config = instance.get_concurrency_config()
        granularity = config.pool_config.pool_granularity
        assert granularity is not None and granularity.value == "run"
        assert config.run_queue_config is not None
        assert config.run_queue_config.max_concurrent_runs == 4
        assert config.run_queue_config.should_block_op_concurrency_limited_runs
        limits = {p.name: p.limit for p in instance.event_log_storage.get_pool_limits()}
        assert limits == {ALPHA_VANTAGE_POOL: 1}, "set before any run is queued"
    assert symbol_pipeline.op.pool == ALPHA_VANTAGE_POOL
    assert (home.dagster_home / "history" / "runs.db").exists(), "runs stored in the data home"
    assert (home.dagster_home / "schedules" / "schedules.db").exists(), "and ticks, cursors"


def test_dagster_home_wins_and_a_limit_set_by_the_user_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "elsewhere"))
    with open_instance() as instance:
        instance.event_log_storage.set_concurrency_slots(ALPHA_VANTAGE_POOL, 2)
    with open_instance() as instance:
        assert Path(instance.root_directory) == tmp_path / "elsewhere"
        assert instance.event_log_storage.get_concurrency_info(ALPHA_VANTAGE_POOL).slot_count == 2


def test_a_process_holding_the_instance_too_long_is_named_not_waited_for_forever(
    home: DataHome,
) -> None:
    """The lock is only held while an instance is made or opened; far longer means a hang."""
    home.dagster_home.mkdir(parents=True)
    with FileLock(home.dagster_home / LOCK_NAME), pytest.raises(InstanceBusyError) as raised:
        open_instance(lock_timeout=0.2)
    assert str(home.dagster_home / LOCK_NAME) in str(raised.value)
    with open_instance() as instance:  # released: the next one goes ahead
        assert Path(instance.root_directory) == home.dagster_home
