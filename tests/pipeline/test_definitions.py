"""The code location loads as Dagster's own tooling loads it."""

from __future__ import annotations

import subprocess
from pathlib import Path

from dagster import AssetKey

from market_pipeline.definitions import defs

REPO = Path(__file__).resolve().parents[2]


def test_dagster_definitions_validate_passes() -> None:
    done = subprocess.run(
        [str(Path(__import__("sys").executable).with_name("dagster")), "definitions", "validate",
         "-w", "workspace.yaml"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "All code locations passed validation" in done.stdout + done.stderr


def test_three_partitioned_assets_in_a_chain() -> None:
    graph = defs.resolve_asset_graph()
    raw, clean, ohlcv = (AssetKey(k) for k in ("raw_data", "clean_data", "ohlcv_data"))
    assert graph.get(clean).parent_keys == {raw}
    assert graph.get(ohlcv).parent_keys == {clean}
    assert {graph.get(k).partitions_def for k in (raw, clean, ohlcv)} == {
        graph.get(raw).partitions_def
    }
