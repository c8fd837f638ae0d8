"""The code location loads as Dagster's own tooling loads it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from dagster import AssetKey, Definitions, EnvVar, build_resources

from market_core.home import DataHome
from market_pipeline import definitions
from market_pipeline.definitions import defs
from market_pipeline.defs.resources import resources_from_env
from tests.pipeline.helpers import resolution_problem

REPO = Path(__file__).resolve().parents[2]


def test_dagster_definitions_validate_passes() -> None:
    done = subprocess.run(
        [str(Path(__import__("sys").executable).with_name("dagster")), "definitions", "validate",
         "-w", "workspace.yaml"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "All code locations passed validation" in done.stdout + done.stderr


def test_the_environment_is_read_when_the_location_loads_not_when_it_is_imported(
    home: DataHome, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = [name for name, value in vars(definitions).items()
            if isinstance(value, Definitions | dict) and not name.startswith("__")]  # fmt: skip
    assert held == [], "no Definitions or resources built at import"
    first = defs()
    monkeypatch.setenv("MARKET_DATA_HOME", str(tmp_path / "other"))
    second = defs()
    databases = [(d.resources or {})["duckdb"].database for d in (first, second)]
    assert databases == [str(home.duckdb_path), str(DataHome(tmp_path / "other").duckdb_path)]


def test_three_partitioned_assets_in_a_chain() -> None:
    graph = defs().resolve_asset_graph()
    raw, clean, ohlcv = (AssetKey(k) for k in ("raw_data", "clean_data", "ohlcv_data"))
    assert graph.get(clean).parent_keys == {raw}
    assert graph.get(ohlcv).parent_keys == {clean}
    assert {graph.get(k).partitions_def for k in (raw, clean, ohlcv)} == {
        graph.get(raw).partitions_def
    }


def test_set_variables_feed_the_resources_and_unset_ones_keep_the_field_defaults(
    home: DataHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALPHAVANTAGE_API_KEY", " SECRET-KEY ")
    monkeypatch.setenv("ALPHAVANTAGE_REQUESTS_PER_DAY", " 1_000 ")
    monkeypatch.setenv("ALPHAVANTAGE_OUTPUTSIZE", "Compact")
    monkeypatch.setenv("MARKET_HISTORY_START", " ")  # blank is unset
    resources = resources_from_env()
    key = resources["alpha_vantage"].api_key  # type: ignore[attr-defined]
    assert isinstance(key, EnvVar) and key.env_var_name == "ALPHAVANTAGE_API_KEY", "never a value"
    with build_resources(resources) as resolved:
        source = resolved.alpha_vantage
        assert (source.api_key, source.base_url, source.outputsize) == (
            "SECRET-KEY", "https://www.alphavantage.co/query", "compact"
        )  # fmt: skip
        limits = (source.requests_per_second, source.requests_per_minute, source.requests_per_day)
        assert limits == (1, 5, 1000)
        assert resolved.duckdb.database == str(home.duckdb_path)
        assert resolved.watchlist.start_date() is None
        assert resolved.watchlist.wanted() == ["AAPL", "MSFT", "GOOGL", "AMZN", "NVDA"]


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("ALPHAVANTAGE_REQUESTS_PER_MINUTE", "-1", "must be 0 (no limit) or more, got -1"),
        ("ALPHAVANTAGE_REQUESTS_PER_SECOND", "fast", "cannot be coerced into an int"),
        ("ALPHAVANTAGE_OUTPUTSIZE", "huge", "must be compact, full or auto, got 'huge'"),
        ("MARKET_HISTORY_START", "2020-13-01", "must be an ISO date"),
    ],
)
def test_a_bad_value_fails_resolution_naming_its_variable(
    home: DataHome, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, says: str
) -> None:
    problem = resolution_problem(monkeypatch, variable, value)
    assert variable in problem and says in problem
