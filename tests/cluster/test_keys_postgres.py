"""API keys in the several-machines mode: kept in the lake catalog's PostgreSQL, so a key made
on one machine opens every replica, and a revoke closes every replica within 5 s."""

from __future__ import annotations

import hashlib
import subprocess
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import psycopg
import pytest
import requests

from tests.cluster.services import PostgresService
from tests.cluster.test_lake_api import AAPL, new_lake
from tests.reliability.processes import REPO, clean_env
from tests.served_api import serve

pytestmark = pytest.mark.cluster

REVOKE_SECONDS = 5.0


def status_within(check: Callable[[], int], status: int, seconds: float) -> None:
    started = time.monotonic()
    while (code := check()) != status:
        assert time.monotonic() - started < seconds, f"still {code} after {seconds} s"
        time.sleep(0.05)


def test_a_key_opens_every_replica_and_its_revoke_closes_them_within_5_s(
    postgres: PostgresService, tmp_path: Path
) -> None:
    lake = new_lake(postgres, tmp_path)
    lake.commit(AAPL)

    def make(*args: str) -> subprocess.CompletedProcess[str]:
        home = lake.machine("operator")
        return subprocess.run(
            ["make", "-s", "--no-print-directory", *args], cwd=REPO, capture_output=True,
            text=True, timeout=120, env=clean_env(MARKET_DATA_HOME=str(home.root), **lake.env()),
        )  # fmt: skip

    made = make("api-key", "NAME=replicas")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]
    with psycopg.connect(lake.url) as conn:
        rows = conn.execute("SELECT name, key_sha256 FROM api_keys").fetchall()
    assert rows == [("replicas", hashlib.sha256(key.encode()).hexdigest())]
    env = {**lake.env(), "MARKET_API_AUTH": "required"}
    with ExitStack() as stack:
        replicas = [
            stack.enter_context(serve(lake.machine(name), tmp_path / f"{name}.log", **env))
            for name in ("api-a", "api-b")
        ]
        for served in replicas:
            url = f"{served.base}/instruments/AAPL/ohlcv"
            assert requests.get(url, timeout=30).status_code == 401
            assert requests.get(url, headers={"X-API-Key": key}, timeout=30).status_code == 200
        assert make("api-key-revoke", "NAME=replicas").returncode == 0
        for served in replicas:
            url = f"{served.base}/instruments/AAPL/ohlcv"
            status_within(
                lambda url=url: (
                    requests.get(url, headers={"X-API-Key": key}, timeout=30).status_code
                ),
                401,
                REVOKE_SECONDS,
            )
    for name in ("api-a", "api-b"):
        assert key not in (tmp_path / f"{name}.log").read_text()
    listed = make("api-keys")
    assert listed.returncode == 0 and "replicas" not in listed.stdout.split()
