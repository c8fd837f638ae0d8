"""The schedule and sensors are wired into the code location and start with ``dagster dev``."""

from __future__ import annotations

from dagster import AssetKey, DefaultScheduleStatus, DefaultSensorStatus

from market_pipeline.definitions import defs
from market_pipeline.defs.automation import DAILY_UPDATE_CRON


def test_schedule_and_sensors_run_by_default_and_target_the_pipeline() -> None:
    location = defs()
    repo = location.get_repository_def()
    schedule = repo.get_schedule_def("daily_update")
    assert (schedule.cron_schedule, schedule.execution_timezone) == (
        DAILY_UPDATE_CRON, "America/New_York"
    )  # fmt: skip
    assert schedule.job_name == "ingest_job"
    assert schedule.default_status == DefaultScheduleStatus.RUNNING
    sensors = {s.name: s for s in repo.sensor_defs}
    assert set(sensors) == {"watchlist", "follow_raw_data", "intraday", "listings_refresh"}
    assert all(s.default_status == DefaultSensorStatus.RUNNING for s in sensors.values())
    assert sensors["watchlist"].job_name == "ingest_job"
    assert sensors["intraday"].job_name == "intraday_job"
    assert sensors["listings_refresh"].job_name == "listings_job"
    graph = location.resolve_asset_graph()
    followed = sensors["follow_raw_data"].asset_selection.resolve(graph)  # type: ignore[union-attr]
    assert followed == {
        AssetKey("clean_data"),
        AssetKey("ohlcv_data"),
        AssetKey("corporate_actions"),
    }
    assert graph.get(AssetKey("raw_data")).automation_condition is None, "raw_data: schedule"
