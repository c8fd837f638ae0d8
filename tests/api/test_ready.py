"""``GET /ready`` over a real granian server: 503 with its reason before the first load, 200
once the store holds bars; ``/health`` (liveness) answers 200 throughout."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import requests

from market_core.home import DataHome
from tests.api.writer import load
from tests.served_api import serve


def test_ready_waits_for_the_first_load(tmp_path: Path) -> None:
    home = DataHome(tmp_path / "home")
    with serve(home, tmp_path / "granian.log") as served:
        before = requests.get(f"{served.base}/ready", timeout=10)
        assert before.status_code == 503
        assert before.headers["retry-after"] == "5"
        body = before.json()
        assert body["error"] == "not_ready"
        assert "no bars loaded yet" in body["detail"]
        assert requests.get(f"{served.base}/health", timeout=10).status_code == 200

        load(home, [(datetime(2024, 1, 2), "AAPL", 10.0, 11.0, 9.0, 10.5, 1000)])
        after = requests.get(f"{served.base}/ready", timeout=10)
        for _ in range(50):  # the API sees the new data version within its poll interval
            if after.status_code == 200:
                break
            after = requests.get(f"{served.base}/ready", timeout=10)
        assert after.status_code == 200, after.text
        assert after.json()["status"] == "ready"
        assert after.json()["newest_bar_date"] == "2024-01-02"
        assert after.json()["data_version"] is not None
