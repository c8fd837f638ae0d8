"""The Dagster instance in PostgreSQL: one instance for every machine, created safely at once."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from dagster import DagsterInstance
from psycopg import sql

from market_core.home import DataHome
from market_pipeline.cli.instance import (
    ADVISORY_LOCK_KEY,
    InstanceBusyError,
    InstanceConfigWarning,
    InstanceDatabaseError,
    InstanceMode,
    ensure_instance,
    instance_yaml,
    open_instance,
)
from market_pipeline.defs.outcomes import ALPHA_VANTAGE_POOL
from tests.cluster.machines import Barrier, children, finished, machine_env, python
from tests.cluster.services import PostgresService

PASSWORD = "s3cret-Pw"
OPEN_AND_REPORT = """
from market_pipeline.cli.instance import open_instance
with open_instance() as instance:
    ref = instance.get_ref()
    print(ref.run_storage_data.module_name, ref.event_storage_data.module_name)
    print(sorted((p.name, p.limit) for p in instance.event_log_storage.get_pool_limits()))
"""


def tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {row[0] for row in rows.fetchall()}


def run_storage_module(instance: DagsterInstance) -> str:
    data = instance.get_ref().run_storage_data
    assert data is not None
    return data.module_name


@pytest.fixture
def cluster_env(
    postgres: PostgresService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """A fresh database and shared folder; this process is a machine with its own data home."""
    shared = {
        "MARKET_POSTGRES_URL": postgres.fresh_database(),
        "MARKET_SHARED_HOME": str(tmp_path / "shared"),
    }
    for name, value in shared.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MARKET_DATA_HOME", str(tmp_path / "here"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("PGPASSWORD", "")  # restored afterwards, whatever open_instance exports
    return shared


def test_two_machines_open_a_fresh_postgres_instance_at_once(
    cluster_env: dict[str, str], tmp_path: Path
) -> None:
    url = cluster_env["MARKET_POSTGRES_URL"]
    assert "runs" not in tables(url)
    barrier = Barrier(tmp_path)
    homes = [tmp_path / "machine-a", tmp_path / "machine-b"]
    with children() as started:
        for n, home in enumerate(homes):
            code = barrier.child_code(f"m{n}") + OPEN_AND_REPORT
            started.append(python(code, machine_env(home, cluster_env)))
        barrier.release_when_ready(2, started)
        outputs = [finished(child, timeout=180) for child in started]
    for out in outputs:
        modules, limits = out.strip().splitlines()
        assert modules == "dagster_postgres dagster_postgres"
        assert limits == str([(ALPHA_VANTAGE_POOL, 1)])
    assert {"runs", "event_logs", "jobs", "concurrency_limits", "alembic_version"} <= tables(url)
    for home in homes:
        dagster_home = DataHome(home).dagster_home
        assert (dagster_home / "dagster.yaml").exists(), "the config stays per machine"
        assert not (dagster_home / "history").exists(), "no SQLite run storage anywhere"
    with open_instance() as here:  # a third machine sees what the two made, and their writes
        here.add_dynamic_partitions("symbols", ["AAA"])
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT partition FROM dynamic_partitions").fetchall()
    assert rows == [("AAA",)]


def test_the_config_names_the_database_by_its_parts_and_holds_no_password(
    postgres: PostgresService, cluster_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = cluster_env["MARKET_POSTGRES_URL"]
    database = url.rsplit("/", 1)[1]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE owner LOGIN PASSWORD {}").format(sql.Literal(PASSWORD)))
        conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO owner").format(sql.Identifier(database)))
    with_password = f"postgresql://owner:{PASSWORD}@127.0.0.1:{postgres.port}/{database}"
    monkeypatch.setenv("MARKET_POSTGRES_URL", with_password)
    with open_instance() as instance:
        assert instance.get_runs() == []
    config = (DataHome.from_env().dagster_home / "dagster.yaml").read_text()
    assert PASSWORD not in config
    assert "scheme: postgresql+psycopg2" in config
    assert "username: owner" in config and f"db_name: {database}" in config
    shared = cluster_env["MARKET_SHARED_HOME"]
    assert f"base_dir: {shared}/dagster/logs" in config, "a worker's compute logs are shared"
    assert f"base_dir: {shared}/dagster/storage" in config


def test_a_config_of_the_other_mode_is_rewritten_and_an_edited_one_kept_with_a_warning(
    tmp_path: Path,
) -> None:
    home = tmp_path / "dagster"
    postgres_mode = InstanceMode("postgresql://u@127.0.0.1:5/db", tmp_path / "shared")
    config = ensure_instance(home, InstanceMode())
    embedded = instance_yaml(InstanceMode(), home.resolve())
    assert config.read_text() == embedded, "the embedded file"
    ensure_instance(home, postgres_mode)
    assert "postgres_db:" in config.read_text() and "db_name: db" in config.read_text()
    ensure_instance(home, InstanceMode("postgresql://u@127.0.0.1:5/other", None))
    assert "db_name: other" in config.read_text(), "ours follows the URL"
    ensure_instance(home, InstanceMode())
    assert config.read_text() == embedded

    edited = embedded + "retention:\n  schedule:\n    purge_after_days: 90\n"
    config.write_text(edited)
    with pytest.warns(InstanceConfigWarning, match="stores runs in SQLite .* MARKET_POSTGRES_URL"):
        ensure_instance(home, postgres_mode)
    assert config.read_text() == edited, "the user's file is theirs"
    ensure_instance(home, InstanceMode())  # same mode as the edit: nothing to say
    assert config.read_text() == edited


def test_an_existing_sqlite_instance_moves_to_postgres_when_the_url_is_set(
    cluster_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MARKET_POSTGRES_URL")
    with open_instance() as instance:
        assert run_storage_module(instance).startswith("dagster._core")
    monkeypatch.setenv("MARKET_POSTGRES_URL", cluster_env["MARKET_POSTGRES_URL"])
    with open_instance() as instance:
        assert run_storage_module(instance) == "dagster_postgres"
    assert "runs" in tables(cluster_env["MARKET_POSTGRES_URL"])


def test_a_machine_holding_the_instance_lock_is_named_not_waited_for_forever(
    postgres: PostgresService, cluster_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = cluster_env["MARKET_POSTGRES_URL"]
    with psycopg.connect(url, autocommit=True) as other_machine:
        other_machine.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
        with pytest.raises(InstanceBusyError, match="another machine") as raised:
            open_instance(lock_timeout=0.3)
    assert str(ADVISORY_LOCK_KEY) in str(raised.value)
    with open_instance() as instance:  # the session ended, so did its lock
        assert instance.get_runs() == []


def test_an_unreachable_database_is_named_without_its_password(
    cluster_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tools.services import free_port

    monkeypatch.setenv(
        "MARKET_POSTGRES_URL", f"postgresql://u:{PASSWORD}@127.0.0.1:{free_port()}/x"
    )
    with pytest.raises(InstanceDatabaseError, match="cannot reach the Dagster instance") as raised:
        open_instance(lock_timeout=5)
    assert PASSWORD not in str(raised.value)
    assert "127.0.0.1" in str(raised.value)
