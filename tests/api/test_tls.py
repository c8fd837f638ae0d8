"""``MARKET_API_TLS_CERT`` / ``MARKET_API_TLS_KEY``: granian serves https with a certificate
made in the test, and nothing in clear on that port."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from market_api.settings import TLS_CERT_VAR, TLS_KEY_VAR, Settings, SettingsError
from tests.api.certs import self_signed
from tests.api.conftest import Dataset
from tests.served_api import serve

pytestmark = pytest.mark.e2e


def test_the_api_serves_https_with_the_given_certificate(dataset: Dataset, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    env = {TLS_CERT_VAR: str(cert), TLS_KEY_VAR: str(key)}
    with serve(dataset.home, tmp_path / "granian.log", **env) as server:
        assert server.base.startswith("https://")
        answer = requests.get(f"{server.base}/instruments/AAPL/ohlcv", verify=str(cert), timeout=30)
        assert answer.status_code == 200 and answer.json()["bars"]
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"{server.base}/health", timeout=30)  # not a certificate we trust
        plain = server.base.replace("https://", "http://")
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{plain}/health", timeout=30)


def test_one_half_of_the_pair_names_the_other(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    with pytest.raises(SettingsError, match=TLS_KEY_VAR):
        Settings.from_env({TLS_CERT_VAR: str(cert)})
    with pytest.raises(SettingsError, match=TLS_CERT_VAR):
        Settings.from_env({TLS_KEY_VAR: str(key)})
    with pytest.raises(SettingsError, match=TLS_CERT_VAR):
        Settings.from_env({TLS_CERT_VAR: str(tmp_path / "missing.pem"), TLS_KEY_VAR: str(key)})
