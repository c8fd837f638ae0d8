"""The API key is in nothing a run leaves behind, whatever went wrong.

Places searched: every file under the data home and the Dagster instance (Parquet, DuckDB and
SQLite searched through their decoded contents, see leaks.py), the step failures, every log
record down to DEBUG (urllib3 logs each request line, query string included) and the process's
stdout and stderr. The runs fail in every way the source can fail, including the two that put
the key into text by themselves: Alpha Vantage echoing it in an ``Information`` message, and
requests putting the whole URL into its exception.
"""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import zlib
from pathlib import Path
from urllib.parse import quote

import duckdb
import polars as pl
import pytest

from market_core.home import DataHome
from tests.conftest import TEST_KEY, Run
from tests.pipeline.helpers import failure_text
from tests.reliability.conftest import Traces
from tests.reliability.faults import FAULTS
from tests.reliability.leaks import leaks, places_with_secret
from tests.reliability.processes import run_module
from tests.stubs.alpha_vantage import AlphaVantageStub

# Real keys are upper-case letters and digits; one that needs URL-encoding shows whether a
# request line or URL is redacted in the form it is actually written.
ODD_KEY = "K+Y/=&%SECRET-42"


def dead_url() -> str:
    """An address on loopback where nothing listens: every connect is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/query"


def test_the_search_finds_a_key_in_every_encoding_a_run_could_use(tmp_path: Path) -> None:
    """Without this the other tests here could pass by not looking."""
    values = [f"{i}-{TEST_KEY}-{i * 7919}" for i in range(20_000)]
    pl.DataFrame({"v": values}).write_parquet(tmp_path / "a.parquet", compression="zstd")
    with duckdb.connect(str(tmp_path / "b.duckdb")) as conn:
        conn.execute("CREATE TABLE t AS SELECT unnest(?::VARCHAR[]) AS v", [values])
        conn.execute("CHECKPOINT")
    blob = zlib.compress(("x" * 99 + TEST_KEY).encode())
    with contextlib.closing(sqlite3.connect(tmp_path / "c.db")) as lite, lite:
        lite.execute("CREATE TABLE snapshots (body BLOB)")
        lite.execute("INSERT INTO snapshots VALUES (?)", [blob])
    (tmp_path / "d.log").write_text(f"GET /query?apikey={quote(ODD_KEY, safe='')}")

    hits = places_with_secret(tmp_path, TEST_KEY)
    assert any("a.parquet (Parquet contents)" in h for h in hits)
    assert any("b.duckdb (DuckDB t.v)" in h for h in hits)
    assert any("c.db (SQLite table snapshots)" in h for h in hits)
    assert places_with_secret(tmp_path, ODD_KEY) == [f"{tmp_path / 'd.log'} (bytes)"]


@pytest.mark.parametrize("key", [TEST_KEY, ODD_KEY], ids=["plain-key", "url-encoded-key"])
def test_no_key_anywhere_after_runs_that_fail_in_every_way(
    key: str,
    keyed: AlphaVantageStub,
    run: Run,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    traces: Traces,
) -> None:
    monkeypatch.setenv("ALPHAVANTAGE_API_KEY", key)
    others = [f for f in FAULTS if f.outcome != "stops"]
    for fault in others:
        keyed.script(fault.symbol, fault.behaviour)
    keyed.script("DAILY", "info_daily")  # last: it stops the run; it echoes the key
    texts = [failure_text(run([*(f.symbol for f in others), "DAILY"]))]
    for fault in [f for f in FAULTS if f.outcome == "stops"]:
        keyed.script(fault.symbol, fault.behaviour)
        texts.append(failure_text(run([fault.symbol])))
    assert any(r.apikey == key for r in keyed.requests), "the stub did receive the key"
    assert "apikey=***" in traces.logs, "urllib3 did log request lines (redacted)"
    assert "We have detected your API key as ***" in "\n".join(texts)
    failures = "\n".join(texts)
    assert not traces.leaks(key, tmp_path, failure=failures)


def test_no_key_in_a_connection_error_even_though_requests_puts_the_url_in_it(
    keyed: AlphaVantageStub,
    run: Run,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    traces: Traces,
) -> None:
    monkeypatch.setenv("ALPHAVANTAGE_BASE_URL", dead_url())
    result = run(["AAA", "BBB"], max_attempts=2)
    text = failure_text(result)
    assert "AAA: ConnectionError talking to 127.0.0.1" in text and "BBB: " in text
    assert not traces.leaks(TEST_KEY, tmp_path, failure=text)


def test_no_key_under_the_data_home_after_a_failing_ingest(
    stub: AlphaVantageStub, tmp_path: Path
) -> None:
    """``make ingest``'s program, with Dagster's instance (event log, run storage, compute logs)
    inside the data home as users have it, meeting a failure of every kind in one run."""
    home = DataHome(tmp_path / "home")
    stopping = next(f for f in FAULTS if f.behaviour == "info_daily")  # echoes the key
    others = [f for f in FAULTS if f.outcome not in ("stops", "retried") or f.behaviour == "reset"]
    for fault in others:
        stub.script(fault.symbol, fault.behaviour)
    stub.script(stopping.symbol, stopping.behaviour)
    done = run_module("market_pipeline.cli.ingest", env={
        "ALPHAVANTAGE_API_KEY": TEST_KEY, "ALPHAVANTAGE_BASE_URL": stub.url,
        "MARKET_DATA_HOME": str(home.root), "ALPHAVANTAGE_REQUESTS_PER_SECOND": "0",
        "ALPHAVANTAGE_REQUESTS_PER_MINUTE": "0", "ALPHAVANTAGE_REQUESTS_PER_DAY": "1000",
        "MARKET_SYMBOLS": ",".join([*(f.symbol for f in others), stopping.symbol, "AFTER"]),
    })  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "DAILY: Alpha Vantage daily quota used up" in done.stdout
    assert list(home.dagster_home.rglob("*.db")), "the instance's storage was searched too"
    assert list(home.state_dir.glob("ratelimit-*")), "so was the limiter's bucket"
    assert leaks(TEST_KEY, home.root, (done.stdout, done.stderr)) == []
