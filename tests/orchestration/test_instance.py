"""The data home's Dagster instance: its config is valid for this Dagster and limits the pool."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import (
    DagsterEventType,
    QueuedRunCoordinator,
    asset,
    materialize,
)
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


@asset
def noted(context) -> None:  # unannotated: Dagster rejects a string annotation here
    context.log.info("noted: written")


DEBUG_CONSOLE = {"loggers": {"console": {"config": {"log_level": "DEBUG"}}}}


def test_a_runs_console_shows_info_and_up_while_its_event_log_keeps_every_event(
    home: DataHome, capfd: pytest.CaptureFixture[str]
) -> None:
    """Dagster prints a DEBUG line for each event unless told otherwise; the instance's runs print
    INFO and up, and store every event as before. A run's config can ask for DEBUG again."""
    with open_instance() as instance:
        quiet = materialize([noted], instance=instance)
        printed = capfd.readouterr().err
        kinds = [e.dagster_event_type for e in instance.all_logs(quiet.run_id)]
        verbose = materialize([noted], instance=instance, run_config=DEBUG_CONSOLE)
        debug = capfd.readouterr().err
    assert quiet.success and verbose.success
    assert "noted: written" in printed
    assert "STEP_START" not in printed and "ASSET_MATERIALIZATION" not in printed
    for kind in ("STEP_START", "ASSET_MATERIALIZATION", "STEP_SUCCESS", "RUN_SUCCESS"):
        assert DagsterEventType[kind] in kinds, kind
    assert "ASSET_MATERIALIZATION" in debug and "noted: written" in debug
