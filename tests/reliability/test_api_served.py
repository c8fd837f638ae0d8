"""The served API (granian, as ``make api`` starts it) under generated, hostile and heavy traffic.

* Schemathesis against the schema the server itself serves: a few thousand generated requests,
  zero 5xx, every answer conforming to the schema (status, content type, headers, body).
* The hostile probes of test_api_abuse.py, over real HTTP.
* A bounded load (50 connections, 60 s) while a loop of loads writes the same DuckDB file: no
  5xx, no failed request, no failed load, no torn read; then the same on still data until the
  distinct answers overflow the cache; memory within the cache bound throughout.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from market_core.home import DataHome
from tests.reliability import api_data
from tests.reliability.killer import Worker
from tests.reliability.load import hammer
from tests.reliability.probes import probes, verdict
from tests.reliability.schemathesis_run import schemathesis
from tests.served_api import Served, serve

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(900)]

LOAD_SECONDS = float(os.environ.get("RELIABILITY_LOAD_SECONDS", "60"))
CONNECTIONS = 50
STILL_SECONDS_MAX = 300.0  # a hang guard: the still phase ends once its answers overflow the cache
CACHE_BYTES = 16 * 1024 * 1024
# Besides the cache: DuckDB's buffers for the file, the interpreter's arenas, 50 connections
# (measured: 30-80 MiB until 2026-12-06; 132-148 MiB since /instruments counts missing sessions
# once per data version, a join that alone leaves 20-30 MiB with DuckDB's allocator in a fresh
# process, and the metrics; the rest not isolated, docs/operations-and-testing.md). With the
# cache unbounded the server grew by 270 MiB in this test, which this bound still catches.
MEMORY_SLACK = 192 * 1024 * 1024


@pytest.fixture(scope="module")
def data_home(tmp_path_factory: pytest.TempPathFactory) -> DataHome:
    home = DataHome(tmp_path_factory.mktemp("served") / "home")
    api_data.build(home)
    return home


@pytest.fixture(scope="module")
def server(data_home: DataHome, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve(data_home, tmp_path_factory.mktemp("log") / "granian.log") as served:
        yield served


def test_the_server_listens_on_loopback_only(server: Served) -> None:
    addresses = server.listening()
    assert addresses and all(a.startswith("127.0.0.1:") for a in addresses), addresses


def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    server: Served, tmp_path: Path
) -> None:
    """Every check, ``positive_data_acceptance`` included: whatever the schema allows is served
    (a valid but unknown symbol gets the documented 404, which the check expects). The one
    constraint OpenAPI cannot state, ``start <= end``, is taught by ``schemathesis_hooks``.
    The two push streams are left out: a valid request is an answer that never ends, which
    Schemathesis can only time out on; ``tests/api/test_stream.py`` drives their bad input."""
    code, summary, generated = schemathesis(
        server.base, tmp_path, "--report", "junit", "--report-dir", str(tmp_path),
        max_examples=300, timeout=600,
    )  # fmt: skip
    assert code == 0, summary
    assert generated >= 2_000, summary


def test_hostile_requests_over_http_are_rejected_and_never_leak_other_symbols(
    server: Served,
) -> None:
    session = requests.Session()
    problems = []
    for probe in probes():
        response = session.get(server.base + probe.url, headers=probe.headers, timeout=30)
        content_type = response.headers.get("content-type", "")
        problems += verdict(probe, response.status_code, content_type, response.content)
    assert not problems, "\n".join(problems)


class MemoryWatch:
    """Samples the server's resident memory in the background; keeps the highest."""

    def __init__(self, server: Served) -> None:
        self._server = server
        self.peak = server.rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, self._server.rss())

    def __enter__(self) -> MemoryWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def test_load_while_loads_write_the_same_file(tmp_path: Path) -> None:
    """Then, the writer done, the same load on unchanging data: with no new data version to
    empty it, only the cache's own bound keeps memory in check."""
    home = DataHome(tmp_path / "home")
    api_data.build(home)
    writer = Worker("loop", home.root, int(LOAD_SECONDS), "1")
    writer.wait_for("load 1 ok")
    with serve(home, tmp_path / "granian.log", MARKET_API_CACHE_BYTES=str(CACHE_BYTES)) as server:
        hammer(server.base, 3, CONNECTIONS, seed=1)  # warm: connections, DuckDB, arenas
        baseline = server.rss()
        with MemoryWatch(server) as memory:
            during = hammer(server.base, LOAD_SECONDS, CONNECTIONS, seed=100)
            assert writer.finish(timeout=300) == 0, writer.lines[-10:]
            after = hammer(
                server.base, STILL_SECONDS_MAX, CONNECTIONS, seed=200,
                until_distinct_bytes=1.25 * (CACHE_BYTES + MEMORY_SLACK),
            )  # fmt: skip
    loads = [line for line in writer.lines if line.startswith("load ")]
    summary = (f"{during.requests} requests during {len(loads)} loads: {dict(during.statuses)}, "
               f"{dict(during.failures)}; {after.requests} after: {dict(after.statuses)}, "
               f"{dict(after.failures)}, distinct answers {after.distinct_bytes >> 20} MiB; "
               f"memory {baseline >> 20} -> {memory.peak >> 20} MiB")  # fmt: skip
    print(summary)
    for tally in (during, after):
        assert not [s for s in tally.statuses if s >= 500], summary
        assert not tally.failures, summary
        assert not tally.torn, "\n".join(tally.torn[:20])
    assert all(line.endswith(" ok") for line in loads) and len(loads) >= 5, loads
    assert after.distinct_bytes > CACHE_BYTES + MEMORY_SLACK, f"too little to fill: {summary}"
    assert memory.peak - baseline <= CACHE_BYTES + MEMORY_SLACK, summary
