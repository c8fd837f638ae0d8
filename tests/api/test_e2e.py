"""The real server: granian as `make api` runs it, on a free loopback port, over HTTP."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.api.conftest import REPO_ROOT, Dataset

GRANIAN = Path(sys.executable).with_name("granian")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def make_api_command(port: int) -> list[str]:
    """The `make api` recipe (from `make -n`), so this runs exactly what the Makefile runs."""
    if shutil.which("make") is None:
        return [str(GRANIAN), "--interface", "asgi", "--factory", "--host", "127.0.0.1",
                "--port", str(port), "--workers", "1", "--no-ws",
                "market_api.app:create_app"]  # fmt: skip
    # Without the flags of a make we may run under (`make test`): its jobserver is not ours.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    dry = subprocess.run(
        ["make", "-s", "-n", "api", f"MARKET_API_PORT={port}"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    recipe = dry.stdout.replace("\\\n", " ")
    line = next(line for line in recipe.splitlines() if "granian" in line)
    command = shlex.split(line)
    return [str(GRANIAN), *command[1:]]  # the granian of the interpreter running the tests


@pytest.fixture
def server(dataset: Dataset, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "MARKET_DATA_HOME": str(dataset.home.root),
        "MARKET_API_CACHE_ENTRIES": "100",
    }
    log = (tmp_path / "granian.log").open("w")
    proc = subprocess.Popen(
        make_api_command(port), cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (tmp_path / "granian.log").read_text()
            try:
                requests.get(f"{base}/health", timeout=1)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "granian did not start"
                time.sleep(0.1)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.mark.e2e
def test_served_by_granian_over_http(server: str, dataset: Dataset) -> None:
    session = requests.Session()
    health = session.get(f"{server}/health", timeout=5)
    assert health.status_code == 200
    assert health.json()["newest_bar_date"] == "2024-04-30"

    instruments = session.get(f"{server}/instruments", timeout=5).json()["instruments"]
    assert [i["symbol"] for i in instruments] == ["AAPL", "BRK.B", "MSFT"]

    url = f"{server}/instruments/msft/ohlcv?interval=1mo"
    first = session.get(url, timeout=5)
    assert first.status_code == 200
    assert first.json()["symbol"] == "MSFT"
    assert [b["timestamp"] for b in first.json()["bars"]] == ["2024-01-02", "2024-02-01",
                                                              "2024-03-01"]  # fmt: skip
    cached = session.get(url, timeout=5)  # served by the cache-first fast path
    assert cached.content == first.content
    assert cached.headers["etag"] == first.headers["etag"]
    assert cached.headers["content-type"] == "application/json"
    assert int(cached.headers["content-length"]) == len(cached.content)
    not_modified = session.get(url, headers={"If-None-Match": first.headers["etag"]}, timeout=5)
    assert not_modified.status_code == 304

    as_csv = session.get(url, headers={"Accept": "text/csv"}, timeout=5)
    assert as_csv.headers["content-type"].startswith("text/csv")
    assert as_csv.text.splitlines()[0] == "timestamp,open,high,low,close,volume"
    assert len(as_csv.text.splitlines()) == 4

    bad = session.get(f"{server}/instruments/AAPL/ohlcv?limit=0", timeout=5)
    assert bad.status_code == 400
    assert bad.json()["parameter"] == "limit"
    assert session.get(f"{server}/instruments/NOPE/stats", timeout=5).status_code == 404
    assert session.get(f"{server}/schema/openapi.json", timeout=5).json()["paths"]


def raw_exchange(base: str, request: bytes) -> bytes:
    """Everything the server sends back to one request on a fresh connection, until it closes."""
    host, port = base.removeprefix("http://").split(":")
    received = b""
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(request)
        while chunk := sock.recv(65536):
            received += chunk
    return received


@pytest.mark.e2e
def test_head_over_http_sends_headers_and_not_one_body_byte(server: str) -> None:
    path = "/instruments/AAPL/ohlcv?limit=3"
    expected = requests.get(server + path, timeout=5)
    request = f"HEAD {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    for _ in range(2):  # a miss answered by Litestar, then a hit answered by the fast path
        head, _, rest = raw_exchange(server, request).partition(b"\r\n\r\n")
        assert rest == b"", rest[:100]
        status, *lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines)
        assert status == "HTTP/1.1 200 OK", status
        assert headers["etag"] == expected.headers["etag"].lower()
        assert int(headers["content-length"]) == len(expected.content)


def test_make_api_serves_the_factory_on_loopback() -> None:
    command = make_api_command(8123)
    host = command[command.index("--host") + 1]
    assert host == "127.0.0.1"
    assert command[command.index("--port") + 1] == "8123"
    assert command[command.index("--interface") + 1] == "asgi"
    assert "--factory" in command
    assert command[-1] == "market_api.app:create_app"
