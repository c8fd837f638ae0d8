"""A data home written by a943a77, the last commit before the move into folders, still works.

The old home is made here by the old tree itself (``git archive``, its own Makefile's ``ingest``,
offline); then today's ``make ingest`` loads into it and ``make api`` serves it. Names that are
contracts (tables, folders, asset keys, the partitions) are spelled out, not imported, so that a
rename in today's code fails here instead of following along.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest
import requests
from dagster import AssetKey, DagsterInstance

from market_core.home import DataHome
from tests.orchestration.dagster_server import DagsterServer
from tests.reliability.processes import REPO, clean_env
from tests.served_api import serve

OLD_COMMIT = "a943a77"
OLD_SYMBOLS = ("AAPL", "MSFT")
NEW_SYMBOLS = ("MSFT", "NVDA")
"""Today's ingest reloads one symbol the old home holds and adds one: AAPL's bars, actions and
materializations can then only have come from the old code."""
COMMAND_SECONDS = 240.0
STAY_OUT_OF_SETUP = ("-o", ".venv/.installed")
"""``make setup`` installs from the network when its inputs are newer than its stamp; the venv
running this test is the one both trees use."""
BARS = "SELECT strftime(timestamp, '%Y-%m-%d'), open, high, low, close, volume FROM ohlcv_data"
ACTIONS = """
SELECT kind, strftime(ex_date, '%Y-%m-%d'), split_factor, amount, strftime(declaration_date,
    '%Y-%m-%d'), strftime(record_date, '%Y-%m-%d'), strftime(payment_date, '%Y-%m-%d')
FROM corporate_actions WHERE symbol = ? ORDER BY ex_date"""
WHERE_FROM = (
    "import market_api as a, market_core as c, market_pipeline as p; "
    "print(a.__file__, c.__file__, p.__file__)"
)
"""Where the old tree's processes import the packages from: the venv holds today's, editable."""
UI_RUNS = "{ runsOrError { ... on Runs { results { runId status jobName } } } }"
UI_HISTORY = """
query History($partitions: [String!]) {
  assetOrError(assetKey: {path: ["ohlcv_data"]}) {
    ... on Asset { assetMaterializations(partitions: $partitions) { runId partition } }
  }
}"""


@dataclass(frozen=True)
class OldHome:
    """The home as the old code left it, read before today's code touches it."""

    root: Path
    entries: frozenset[str]
    tables: dict[str, int]
    bars: dict[str, list[dict[str, Any]]]
    actions: dict[str, Any]
    runs: dict[str, str]
    instance_yaml: bytes

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster"


def process_env(home: Path, symbols: tuple[str, ...], **extra: str) -> dict[str, str]:
    """Offline (no key), this home only, and none of the flags of a make we may run under.

    ``DAGSTER_HOME`` is left to each Makefile, as users leave it: where the instance lives is
    part of the home's layout."""
    env = clean_env(MARKET_DATA_HOME=str(home), MARKET_SYMBOLS=",".join(symbols), **extra)
    for name in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL"):
        env.pop(name, None)
    return env


def run(command: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=COMMAND_SECONDS,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(command)} exited {done.returncode}:\n{output[-4000:]}"
    return output


def extract_old_tree(into: Path) -> None:
    """The old commit's files, or a skip where the clone does not hold it (a shallow checkout)."""
    try:
        found = subprocess.run(
            ["git", "rev-parse", "--verify", "--quiet", f"{OLD_COMMIT}^{{commit}}"],
            cwd=REPO, capture_output=True, timeout=30,
        )  # fmt: skip
    except FileNotFoundError:
        pytest.skip("git is not installed: the old home is built from the old commit's tree")
    if found.returncode != 0:
        pytest.skip(f"commit {OLD_COMMIT} is not in this clone (shallow?): `git fetch --unshallow`")
    archive = subprocess.run(
        ["git", "archive", "--format=tar", OLD_COMMIT], cwd=REPO, capture_output=True,
        timeout=60, check=True,
    ).stdout  # fmt: skip
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")


def old_make(old: Path, target: str, env: dict[str, str]) -> str:
    """A target of the old Makefile, run with this venv's programs."""
    bin_dir = f"BIN={Path(sys.executable).parent}"
    return run(["make", "-s", "--no-print-directory", *STAY_OUT_OF_SETUP, bin_dir, target],
               old, env)  # fmt: skip


def read_runs(dagster_home: Path) -> dict[str, str]:
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        return {r.run_id: r.status.value for r in instance.get_runs()}


def read_bars(db: duckdb.DuckDBPyConnection, symbol: str) -> list[dict[str, Any]]:
    """A symbol's bars in the API's JSON shape."""
    rows = db.execute(f"{BARS} WHERE symbol = ? ORDER BY timestamp", [symbol]).fetchall()
    keys = ("timestamp", "open", "high", "low", "close", "volume")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def read_actions(db: duckdb.DuckDBPyConnection, symbol: str) -> dict[str, Any]:
    """A symbol's events in the API's ``/corporate-actions`` JSON shape."""
    splits, dividends = [], []
    for kind, ex_date, factor, amount, declared, record, payment in db.execute(
        ACTIONS, [symbol]
    ).fetchall():
        if kind == "split":
            splits.append({"ex_date": ex_date, "split_factor": factor})
        else:
            dividends.append({"ex_date": ex_date, "amount": amount, "declaration_date": declared,
                              "record_date": record, "payment_date": payment})  # fmt: skip
    return {"symbol": symbol, "splits": splits, "dividends": dividends}


def snapshot(root: Path) -> OldHome:
    with duckdb.connect(str(root / "market_data.duckdb"), read_only=True) as db:
        names = db.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'"
        ).fetchall()
        tables = {n: db.execute(f'SELECT count(*) FROM "{n}"').fetchall()[0][0] for (n,) in names}
        bars = {symbol: read_bars(db, symbol) for symbol in OLD_SYMBOLS}
        actions = {symbol: read_actions(db, symbol) for symbol in OLD_SYMBOLS}
    return OldHome(
        root=root,
        entries=frozenset(p.name for p in root.iterdir()),
        tables=tables,
        bars=bars,
        actions=actions,
        runs=read_runs(root / "dagster"),
        instance_yaml=(root / "dagster" / "dagster.yaml").read_bytes(),
    )


@pytest.fixture(scope="module")
def old_home(tmp_path_factory: pytest.TempPathFactory) -> OldHome:
    """What ``make ingest`` at the old commit leaves: bars, corporate actions, one Dagster run."""
    base = tmp_path_factory.mktemp("compat")
    old, home = base / "old", base / "home"
    old.mkdir()
    extract_old_tree(old)
    env = process_env(home, OLD_SYMBOLS, PYTHONPATH=str(old))
    where = run([sys.executable, "-c", WHERE_FROM], old, env)
    assert all(Path(f).is_relative_to(old) for f in where.split()), f"today's code shadows: {where}"
    old_make(old, "ingest", env)
    held = snapshot(home)
    assert {"ohlcv_data", "corporate_actions"} <= held.tables.keys(), held.tables
    assert all(held.bars.values()) and all(a["splits"] for a in held.actions.values()), held
    assert len(held.runs) == 1, held.runs
    return held


@pytest.fixture(scope="module")
def loaded(old_home: OldHome) -> None:
    """Today's ``make ingest`` on the old home."""
    env = process_env(old_home.root, NEW_SYMBOLS)
    run(["make", "-s", "--no-print-directory", *STAY_OUT_OF_SETUP, "ingest"], REPO, env)


@pytest.fixture(scope="module")
def api(old_home: OldHome, loaded: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The granian command of ``make api``; the recipe's other step, the DuckDB file's
    conversion, ran in ``make ingest`` on the same home."""
    with serve(DataHome(old_home.root), tmp_path_factory.mktemp("api") / "api.log") as served:
        yield served.base


def get(url: str) -> Any:
    response = requests.get(url, timeout=30)
    assert response.status_code == 200, (url, response.status_code, response.text[:500])
    return response.json()


def test_todays_ingest_loads_into_the_old_tables_and_folders(
    old_home: OldHome, loaded: None
) -> None:
    root = old_home.root
    assert {p.name for p in root.iterdir()} == old_home.entries, "no folder of the home moved"
    for folder in ("raw", "clean", "rejects", "raw_actions/splits", "raw_actions/dividends"):
        assert (root / folder / "NVDA.parquet").is_file(), f"{folder}/ holds the new symbol"
    instance = (root / "dagster" / "dagster.yaml").read_text()
    old_settings = old_home.instance_yaml.decode().split("\n", 1)[1]  # past its header line
    assert old_settings in instance, "the old instance file's settings stay"
    assert "class: HeldSqliteEventLogStorage" in instance, "and it gains the held event log"
    with duckdb.connect(str(root / "market_data.duckdb"), read_only=True) as db:
        for table, count in old_home.tables.items():
            now = db.execute(f'SELECT count(*) FROM "{table}"').fetchall()[0][0]
            assert now >= count, f"{table}: {count} rows before, {now} after"
        assert read_bars(db, "NVDA"), "the new symbol's bars went into ohlcv_data"
        assert read_actions(db, "NVDA")["splits"], "and its events into corporate_actions"
        assert {s: read_bars(db, s) for s in OLD_SYMBOLS} == old_home.bars


def test_make_api_serves_the_old_bars_and_actions(old_home: OldHome, api: str) -> None:
    listed = get(f"{api}/instruments")["instruments"]
    assert [i["symbol"] for i in listed] == ["AAPL", "MSFT", "NVDA"]
    for symbol, bars in old_home.bars.items():
        served = get(f"{api}/instruments/{symbol}/ohlcv")
        assert (served["symbol"], served["interval"]) == (symbol, "1d")
        assert served["bars"] == bars, f"{symbol}: the old home's bars, value for value"
        assert get(f"{api}/instruments/{symbol}/corporate-actions") == old_home.actions[symbol]
    assert get(f"{api}/health")["newest_bar_date"] == old_home.bars["AAPL"][-1]["timestamp"]


def test_the_old_runs_stay_in_the_instance_beside_the_new_one(
    old_home: OldHome, loaded: None
) -> None:
    runs = read_runs(old_home.dagster_home)
    assert {i: runs.get(i) for i in old_home.runs} == dict.fromkeys(old_home.runs, "SUCCESS")
    new = {i: status for i, status in runs.items() if i not in old_home.runs}
    assert list(new.values()) == ["SUCCESS"], f"today's ingest made one run: {new}"
    with DagsterInstance.from_config(str(old_home.dagster_home)) as instance:
        assert instance.get_dynamic_partitions("symbols") == ["AAPL", "MSFT", "NVDA"]
        for asset in ("raw_data", "clean_data", "ohlcv_data", "raw_actions", "corporate_actions"):
            done = instance.get_materialized_partitions(AssetKey(asset))
            assert done >= {"AAPL", "MSFT", "NVDA"}, f"{asset}: {done}"


def test_the_ui_lists_the_old_runs_and_their_materializations(
    old_home: OldHome, loaded: None, tmp_path: Path
) -> None:
    env = process_env(old_home.root, NEW_SYMBOLS, DAGSTER_HOME=str(old_home.dagster_home))
    with DagsterServer(env, tmp_path / "dagster.log") as server:
        runs = server.query(UI_RUNS)["runsOrError"]["results"]
        history = server.query(UI_HISTORY, {"partitions": ["AAPL"]})["assetOrError"]
    listed = {r["runId"]: (r["status"], r["jobName"]) for r in runs}
    assert {i: listed.get(i) for i in old_home.runs} == dict.fromkeys(
        old_home.runs, ("SUCCESS", "ingest_job")
    )
    assert len(listed) == len(old_home.runs) + 1, f"today's ingest made one run: {listed}"
    (old_run,) = old_home.runs
    assert [(m["runId"], m["partition"]) for m in history["assetMaterializations"]] == [
        (old_run, "AAPL")
    ], "AAPL's bars show as loaded by the old run"
