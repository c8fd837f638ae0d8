"""Where the API listens (``MARKET_API_HOST``, ``MARKET_API_WORKERS``) and the auth default
that goes with it: off on loopback, as ``make run`` always was; required beyond it, where
``MARKET_API_AUTH=off`` must be asked for, and is logged."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import requests

from market_api.access.stores import FILE_NAME, FileKeyStore
from market_api.app import create_app
from market_api.settings import AUTH_VAR, HOST_VAR, Settings, SettingsError
from tests.api.conftest import Dataset
from tests.reliability.processes import REPO, clean_env
from tests.served_api import free_port, make_api_command, serve

pytestmark = pytest.mark.e2e


def test_make_api_is_what_it_was_without_the_new_variables() -> None:
    """``make run`` keeps its command: loopback, one worker, no TLS flags."""
    command = make_api_command(8123)
    assert command[1:] == ["--interface", "asgi", "--factory", "--host", "127.0.0.1",
                           "--port", "8123", "--workers", "1", "--no-ws",
                           "market_api.app:create_app"]  # fmt: skip
    assert Settings.from_env({}).auth == "off"


def test_beyond_loopback_with_two_workers_a_key_is_required(
    dataset: Dataset, tmp_path: Path
) -> None:
    key = FileKeyStore(dataset.home.state_dir / FILE_NAME).create("ops")
    env = {HOST_VAR: "0.0.0.0", "MARKET_API_WORKERS": "2"}
    with serve(dataset.home, tmp_path / "granian.log", **env) as server:
        assert {a.rsplit(":", 1)[0] for a in server.listening()} == {"0.0.0.0"}
        assert len(server.processes()) == 3, "granian's main process and two workers"
        base = server.base
        for _ in range(4):  # reaches both workers (each has its own cache and key ring)
            assert requests.get(f"{base}/instruments", timeout=30).status_code == 401
            answer = requests.get(f"{base}/instruments", headers={"X-API-Key": key}, timeout=30)
            assert answer.status_code == 200
        assert requests.get(f"{base}/health", timeout=30).status_code == 200


def test_auth_off_beyond_loopback_serves_when_asked_and_warns(
    dataset: Dataset, tmp_path: Path
) -> None:
    log = tmp_path / "granian.log"
    with serve(dataset.home, log, **{HOST_VAR: "0.0.0.0", AUTH_VAR: "off"}) as server:
        assert requests.get(f"{server.base}/instruments", timeout=30).status_code == 200
    assert f"{AUTH_VAR}=off" in log.read_text()


def test_auth_off_beyond_loopback_unasked_is_refused(dataset: Dataset) -> None:
    """Only a settings object built in code can get there (the environment's default beyond
    loopback is ``required``); it is refused all the same."""
    settings = replace(Settings(home=dataset.home), host="0.0.0.0", auth="off")
    with pytest.raises(SettingsError, match=HOST_VAR):
        create_app(settings)
    assert Settings.from_env({HOST_VAR: "10.1.2.3"}).auth == "required"
    assert Settings.from_env({HOST_VAR: "::1"}).auth == "off"


def test_a_bad_auth_value_stops_the_server_naming_it(dataset: Dataset) -> None:
    command = make_api_command(free_port(), MARKET_API_WORKERS="2")
    env = clean_env(MARKET_DATA_HOME=str(dataset.home.root), **{AUTH_VAR: "maybe"})
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert AUTH_VAR in done.stdout + done.stderr
