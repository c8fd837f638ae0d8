"""The docs page renders in a real browser that can reach nothing but loopback.

Debian's Chromium, headless, with every host name but 127.0.0.1 resolving to nothing and its
own background traffic off, loads the docs as `make api` serves them. A page whose scripts come
from a CDN stays an empty shell there, as it does behind a firewall or offline. The endpoints
must show up as Swagger UI's rendered operations (``data-path`` attributes), not merely as the
spec text the page carries inline.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.api.conftest import Dataset
from tests.served_api import serve

DOCS_PAGES = ["/schema", "/schema/swagger"]
OTHER_HTML = ["/schema/oauth2-redirect.html"]
NOT_OFFERED = ["/schema/redoc", "/schema/elements", "/schema/rapidoc"]
"""Docs UIs no installed package ships: offered, they would be blank pages offline."""
ENDPOINTS = [
    "/health",
    "/instruments",
    "/instruments/{symbol}/ohlcv",
    "/instruments/{symbol}/stats",
]
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "[::1]"}
URL_HOST = re.compile(r"""(?:https?:)?//([^/\s"'<>`\\]+)""")
BROWSER_SECONDS = 120


def chromium() -> str:
    """Debian's Chromium; CI installs it (``.ci/run``), so there a missing one is a failure."""
    found = shutil.which("chromium")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: apt-get install -y chromium")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    return found


def rendered_dom(url: str, profile: Path) -> str:
    """The DOM after the page's scripts ran, in a browser kept off every network but loopback."""
    argv = [
        chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-default-apps", "--disable-extensions", "--no-default-browser-check",
        "--no-proxy-server", "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        f"--user-data-dir={profile}", "--virtual-time-budget=15000", "--dump-dom", url,
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)  # fmt: skip
    try:
        out, err = proc.communicate(timeout=BROWSER_SECONDS)
    finally:  # the browser's helpers (zygote, renderer) share its session: end them all
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode()


def foreign_hosts(html: str) -> set[str]:
    """Every host other than loopback that a page's markup or inline script names."""
    hosts = {match.group(1).lower() for match in URL_HOST.finditer(html)}
    return {host for host in hosts if host.rsplit(":", 1)[0] not in LOOPBACK_HOSTS
            and host not in LOOPBACK_HOSTS}  # fmt: skip


@pytest.fixture
def server(dataset: Dataset, tmp_path: Path) -> Iterator[str]:
    with serve(dataset.home, tmp_path / "granian.log") as served:
        yield served.base


@pytest.mark.e2e
def test_docs_pages_list_the_endpoints_with_no_network_but_loopback(
    server: str, tmp_path: Path
) -> None:
    for page in DOCS_PAGES:
        html = requests.get(server + page, timeout=10)
        assert html.status_code == 200, page
        assert html.headers["content-type"].startswith("text/html"), page
        assert foreign_hosts(html.text) == set(), page

        dom = rendered_dom(server + page, tmp_path / f"profile{page.replace('/', '-')}")
        rendered = set(re.findall(r'data-path="([^"]*)"', dom))
        assert set(ENDPOINTS) <= rendered, f"{page}: rendered operations {sorted(rendered)}"

    for page in OTHER_HTML:
        html = requests.get(server + page, timeout=10)
        assert html.status_code == 200, page
        assert foreign_hosts(html.text) == set(), page
    assert requests.get(f"{server}/schema/openapi.json", timeout=10).json()["paths"]


@pytest.mark.e2e
def test_docs_uis_that_need_a_cdn_are_not_offered(server: str) -> None:
    for page in NOT_OFFERED:
        answer = requests.get(server + page, timeout=10)
        assert answer.status_code == 404, f"{page}: {answer.status_code}"
        assert foreign_hosts(answer.text) == set(), page
