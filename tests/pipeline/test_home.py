"""Which paths move to ``MARKET_SHARED_HOME`` and which stay with the machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from market_core.env import SettingsError
from market_core.home import DataHome

SHARED = ("raw_file", "clean_file", "rejects_file", "actions_rejects_file")
LOCAL = ("duckdb_path", "version_path", "writers_dir", "state_dir", "dagster_home")


def test_without_a_shared_home_every_path_is_where_it_always_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MARKET_DATA_HOME", str(tmp_path / "d"))
    monkeypatch.delenv("MARKET_SHARED_HOME", raising=False)
    home = DataHome.from_env()
    assert home == DataHome(tmp_path / "d")
    assert home.raw_file("AAA") == tmp_path / "d" / "raw" / "AAA.parquet"
    assert home.clean_file("AAA") == tmp_path / "d" / "clean" / "AAA.parquet"
    assert home.rejects_file("AAA") == tmp_path / "d" / "rejects" / "AAA.parquet"
    assert home.raw_actions_file("AAA", "splits") == tmp_path / "d/raw_actions/splits/AAA.parquet"
    assert home.actions_rejects_file("AAA") == tmp_path / "d/rejects_actions/AAA.parquet"
    assert home.duckdb_path == tmp_path / "d" / "market_data.duckdb"


def test_the_parquet_between_stages_moves_to_the_shared_home_and_state_stays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MARKET_DATA_HOME", str(tmp_path / "d"))
    monkeypatch.setenv("MARKET_SHARED_HOME", str(tmp_path / "s"))
    home, alone = DataHome.from_env(), DataHome(tmp_path / "d")
    for name in SHARED:
        path = getattr(home, name)("AAA")
        assert path == tmp_path / "s" / getattr(alone, name)("AAA").relative_to(tmp_path / "d")
    assert (
        home.raw_actions_file("AAA", "dividends")
        == tmp_path / "s/raw_actions/dividends/AAA.parquet"
    )
    for name in LOCAL:
        assert getattr(home, name) == getattr(alone, name), f"{name} stays with the machine"
    configured = DataHome.from_env(tmp_path / "elsewhere")  # a resource's own path
    assert configured.root == tmp_path / "elsewhere"
    assert configured.clean_dir == tmp_path / "s" / "clean"


def test_a_url_for_the_shared_home_is_refused_where_parquet_would_be_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MARKET_SHARED_HOME", "s3://bucket/market")
    home = DataHome.from_env()  # an API replica reading the lake there starts
    assert home.duckdb_path.parent == home.root
    expected = r"MARKET_SHARED_HOME=s3://bucket/market is a URL.*mount"
    with pytest.raises(SettingsError, match=expected):
        home.raw_file("AAA")  # a stage about to write Parquet does not
