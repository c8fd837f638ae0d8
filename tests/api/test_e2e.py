"""The real server: granian as `make api` runs it, on a free loopback port, over HTTP."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.api.conftest import Dataset
from tests.served_api import make_api_command, serve


@pytest.fixture
def server(dataset: Dataset, tmp_path: Path) -> Iterator[str]:
    with serve(dataset.home, tmp_path / "granian.log", MARKET_API_CACHE_ENTRIES="100") as served:
        yield served.base


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
