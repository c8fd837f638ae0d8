"""End to end: Dagster's webserver and daemon on a temporary data home, driven through the UI's
GraphQL API.

A backfill of all partitions launched from the API becomes a single run; the watchlist sensor
registers and loads a new symbol on its own; and the two runs, queued together, wait for each
other (pool ``alpha_vantage``, one slot) instead of overlapping.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from market_core.home import DataHome
from market_pipeline.cli.instance import open_instance
from tests.orchestration.dagster_server import DagsterServer
from tests.pipeline.helpers import table_rows

ASSETS = [{"path": [name]} for name in ("raw_data", "clean_data", "ohlcv_data")]
LAUNCH = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}"""
PARTITIONS = """
{ assetNodeOrError(assetKey: {path: ["raw_data"]}) { ... on AssetNode { partitionKeys } } }"""
RUNS = """
{ runsOrError { ... on Runs { results {
    runId status creationTime startTime endTime tags { key value }
} } } }"""
BACKFILL = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill { status } }
}"""
LOGS = """
query Logs($id: ID!) {
  logsForRun(runId: $id) { ... on EventConnection { events { ... on MessageEvent { message } } } }
}"""
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}
Run = dict[str, Any]


def tags(run: Run) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["tags"]}


def symbol_range(run: Run) -> tuple[str, str]:
    t = tags(run)
    return t["dagster/asset_partition_range_start"], t["dagster/asset_partition_range_end"]


def finished_runs(server: DagsterServer, backfill_id: str) -> list[Run] | None:
    """Every run, once the backfill's run and the watchlist sensor's run have both finished."""
    runs: list[Run] = server.query(RUNS)["runsOrError"]["results"]
    ours = [r for r in runs if tags(r).get("dagster/backfill") == backfill_id]
    ours += [r for r in runs if tags(r).get("market/trigger") == "watchlist"]
    return runs if len(ours) >= 2 and all(r["status"] in FINISHED for r in ours) else None


@pytest.mark.e2e
def test_a_backfill_from_the_ui_api_is_one_run_and_waits_for_the_sensors_run(
    home: DataHome, tmp_path: Path
) -> None:
    with open_instance() as instance:  # as `make run` leaves it: the watchlist registered
        instance.add_dynamic_partitions("symbols", ["AAA", "BBB", "CCC"])
    env = {
        "MARKET_DATA_HOME": str(home.root),
        "DAGSTER_HOME": str(home.dagster_home),
        "MARKET_SYMBOLS": "AAA,BBB,CCC,DDD",  # DDD was added to the watchlist since
    }
    with DagsterServer(env, tmp_path / "dagster.log") as server:
        answer = server.query(
            LAUNCH, {"params": {"assetSelection": ASSETS, "allPartitions": True}}
        )["launchPartitionBackfill"]
        assert answer["__typename"] == "LaunchBackfillSuccess", answer
        server.start_daemon()  # its first pass takes the backfill and the sensor's first tick
        backfill_id = answer["backfillId"]
        runs = server.wait_for(
            lambda: finished_runs(server, backfill_id), timeout=180, what="the two runs"
        )
        keys = server.query(PARTITIONS)["assetNodeOrError"]["partitionKeys"]
        backfill_runs = [r for r in runs if tags(r).get("dagster/backfill") == backfill_id]
        logs = server.query(LOGS, {"id": backfill_runs[0]["runId"]})["logsForRun"]["events"]
        status = server.query(BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]

    assert keys == ["AAA", "BBB", "CCC", "DDD"], "the sensor registered DDD"
    assert [symbol_range(r) for r in backfill_runs] == [("AAA", "CCC")], "all partitions, 1 run"
    assert status["status"] in ("REQUESTED", "COMPLETED_SUCCESS")  # done at its next daemon pass
    first_loads = [r for r in runs if tags(r).get("market/trigger") == "watchlist"]
    assert [symbol_range(r) for r in first_loads] == [("DDD", "DDD")]
    others = [r for r in runs if r not in backfill_runs + first_loads]
    assert all("dagster/schedule_name" in tags(r) for r in others), "nothing ran twice"
    earlier, later = sorted(backfill_runs + first_loads, key=lambda r: r["startTime"])
    assert (earlier["status"], later["status"]) == ("SUCCESS", "SUCCESS")
    assert later["creationTime"] < earlier["endTime"], "both were queued at once"
    assert later["startTime"] >= earlier["endTime"], "the pool's one slot kept them apart"
    messages = [event.get("message", "") for event in logs]
    assert any(m.startswith("progress: 3/3 symbols done, 0 left, 0 failed") for m in messages)
    assert {row[1] for row in table_rows(home)} == {"AAA", "BBB", "CCC", "DDD"}
