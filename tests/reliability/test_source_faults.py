"""Every source fault in the catalogue, through real runs against the live stub.

A first run stores good data for every symbol; a second run meets one fault per symbol, with
good symbols around them in the same run (and the same DuckDB transaction). Each fault must get
its handling (faults.py) and leave what it may not touch exactly as it was; the good symbols
must load their new bars as if nothing happened; and the key must be nowhere afterwards.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from dagster import ExecuteInProcessResult

from market_core.home import DataHome
from market_pipeline.source.client import AlphaVantageClient, Fetched
from market_pipeline.source.errors import TransientHTTPError
from tests.conftest import TEST_KEY, Run
from tests.pipeline.helpers import failure_text, materialized, recent_bars
from tests.reliability.conftest import Traces
from tests.reliability.faults import NOT_STOPPING, STOPPING, Fault
from tests.reliability.state import Stored, added_rejects, stored_bars_kept, unchanged
from tests.stubs.alpha_vantage import AlphaVantageStub

STAGES = ("raw_data", "clean_data", "ohlcv_data")
GOOD = ("GOODA", "GOODB")
Bars = list[tuple[str, dict[str, str]]]


def served_rows(symbol: str, bars: Bars) -> dict[dt.datetime, tuple[object, ...]]:
    """The DuckDB rows that a correct load of ``bars`` leaves."""
    rows: dict[dt.datetime, tuple[object, ...]] = {}
    for date, v in bars:
        ts = dt.datetime.fromisoformat(date)
        rows[ts] = (ts, symbol, float(v["1. open"]), float(v["2. high"]), float(v["3. low"]),
                    float(v["4. close"]), int(v["5. volume"]))  # fmt: skip
    return rows


class Observed:
    """One run with faults, seen from outside: what it asked for, materialized and said."""

    def __init__(self, result: ExecuteInProcessResult, stub: AlphaVantageStub, since: int) -> None:
        self.message = failure_text(result)
        self.requests = stub.requests[since:]
        self.stages = {stage: materialized(result, stage) for stage in STAGES}

    def sizes(self, symbol: str) -> list[str]:
        """The outputsize of each request this run made for the symbol."""
        return [r.outputsize for r in self.requests if r.symbol == symbol]

    def loaded(self, symbol: str) -> bool:
        return all(symbol in done for done in self.stages.values())

    def untouched(self, symbol: str) -> bool:
        return not any(symbol in done for done in self.stages.values())


Check = Callable[[Fault, Observed, Stored, Stored], list[str]]


def _retried(f: Fault, seen: Observed, before: Stored, after: Stored) -> list[str]:
    problems = [] if seen.loaded(f.symbol) else [f"{f.behaviour}: not loaded after a retry"]
    if len(seen.sizes(f.symbol)) != 2:
        problems.append(f"{f.behaviour}: {len(seen.sizes(f.symbol))} requests, wanted 2")
    return problems + stored_bars_kept(f.behaviour, before, after)


def _fallback(f: Fault, seen: Observed, before: Stored, after: Stored) -> list[str]:
    problems = [] if seen.loaded(f.symbol) else [f"{f.behaviour}: not loaded after fallback"]
    if seen.sizes(f.symbol) != ["full", "compact"]:
        problems.append(f"{f.behaviour}: asked {seen.sizes(f.symbol)}, wanted full then compact")
    return problems + stored_bars_kept(f.behaviour, before, after)


def _fails(f: Fault, seen: Observed, before: Stored, after: Stored) -> list[str]:
    problems = [] if seen.untouched(f.symbol) else [f"{f.behaviour}: materialized anyway"]
    if f"{f.symbol}: " not in seen.message or f.evidence not in seen.message:
        problems.append(f"{f.behaviour}: no '{f.symbol}: ...{f.evidence}' in the failure")
    if len(seen.sizes(f.symbol)) != 1:
        problems.append(f"{f.behaviour}: retried a permanent answer")
    return problems + unchanged(f.behaviour, before, after)


def _rows(f: Fault, seen: Observed, before: Stored, after: Stored) -> list[str]:
    """The answer's other rows are the stored ones (the stub's sample is deterministic), so
    the table must be exactly as before: the bad rows neither replaced nor added a bar."""
    problems = [] if seen.loaded(f.symbol) else [f"{f.behaviour}: good rows not loaded"]
    added = added_rejects(before, after)
    if not added or {reason for _, reason in added} != {f.evidence}:
        problems.append(f"{f.behaviour}: new rejects {added}, wanted reason {f.evidence}")
    kept = after.clean_dates()
    wanted_count = 1 if f.outcome == "rows_kept" else 0
    if any(kept[date] != wanted_count for date, _ in added):
        problems.append(f"{f.behaviour}: rejected dates in the clean file {dict(kept)} times")
    if after.rows != before.rows:
        problems.append(f"{f.behaviour}: DuckDB rows changed")
    return problems + stored_bars_kept(f.behaviour, before, after)


CHECKS: dict[str, Check] = {"retried": _retried, "fallback": _fallback, "fails": _fails,
                            "rows_rejected": _rows, "rows_kept": _rows}  # fmt: skip


def test_every_fault_once_beside_good_symbols(
    keyed: AlphaVantageStub,
    run: Run,
    home: DataHome,
    tmp_path: Path,
    traces: Traces,
) -> None:
    symbols = [GOOD[0], *(f.symbol for f in NOT_STOPPING), GOOD[1]]
    for i, symbol in enumerate(GOOD):
        keyed.set_bars(symbol, recent_bars(30, start_price=50 + i))
    first = run(symbols)
    assert first.success, failure_text(first)
    before = {s: Stored.of(home, s) for s in symbols}

    revised = {s: recent_bars(30, start_price=70 + i) for i, s in enumerate(GOOD)}
    for symbol, bars in revised.items():
        keyed.set_bars(symbol, bars)
    for fault in NOT_STOPPING:
        keyed.script(fault.symbol, fault.behaviour)
    since = len(keyed.requests)
    second = run(symbols)
    seen = Observed(second, keyed, since)
    after = {s: Stored.of(home, s) for s in symbols}

    problems = []
    for f in NOT_STOPPING:
        problems += CHECKS[f.outcome](f, seen, before[f.symbol], after[f.symbol])
    for symbol, bars in revised.items():
        if not seen.loaded(symbol) or after[symbol].rows != served_rows(symbol, bars):
            problems.append(f"{symbol}: a good symbol beside the faults did not load its bars")
    assert not problems, "\n".join(problems)
    failed = {f.symbol for f in NOT_STOPPING if f.outcome == "fails"}
    assert seen.stages["ohlcv_data"] == set(symbols) - failed
    assert not traces.leaks(TEST_KEY, tmp_path, failure=seen.message)


@pytest.mark.parametrize("fault", STOPPING, ids=[f.behaviour for f in STOPPING])
def test_a_stopping_fault_stops_the_run_and_changes_nothing_stored(
    fault: Fault,
    keyed: AlphaVantageStub,
    run: Run,
    home: DataHome,
    tmp_path: Path,
    traces: Traces,
) -> None:
    symbols = [GOOD[0], fault.symbol, GOOD[1]]
    keyed.set_bars(GOOD[0], recent_bars(30, start_price=50))
    assert run(symbols).success
    before = {s: Stored.of(home, s) for s in symbols}
    revised = recent_bars(30, start_price=70)
    keyed.set_bars(GOOD[0], revised)
    keyed.script(fault.symbol, fault.behaviour)
    since = len(keyed.requests)
    seen = Observed(run(symbols), keyed, since)

    assert [r.symbol for r in seen.requests] == [GOOD[0], fault.symbol], "stopped at the fault"
    assert f"{fault.symbol}: " in seen.message and fault.evidence in seen.message
    assert f"{GOOD[1]}: not attempted" in seen.message
    assert all(done == {GOOD[0]} for done in seen.stages.values())
    assert Stored.of(home, GOOD[0]).rows == served_rows(GOOD[0], revised)
    for symbol in (fault.symbol, GOOD[1]):
        assert not unchanged(symbol, before[symbol], Stored.of(home, symbol))
    assert not traces.leaks(TEST_KEY, tmp_path, failure=seen.message)


def test_retries_that_run_out_fail_the_symbol_and_keep_its_data(
    keyed: AlphaVantageStub, run: Run, home: DataHome
) -> None:
    assert run(["AAA", "BBB"]).success
    before = Stored.of(home, "AAA")
    keyed.script("AAA", "reset", "http_503", "timeout", "cut_body", "info_burst", "http_429")
    since = len(keyed.requests)
    seen = Observed(run(["AAA", "BBB"], max_attempts=6), keyed, since)
    assert len(seen.sizes("AAA")) == 6
    assert "AAA: Alpha Vantage answered HTTP 429" in seen.message
    assert seen.untouched("AAA") and seen.loaded("BBB")
    assert not unchanged("AAA", before, Stored.of(home, "AAA"))


class TricklingStub(AlphaVantageStub):
    """The stub plus one behaviour, ``trickle``: a good answer sent ``piece`` bytes every
    ``every`` seconds, each well within a per-read timeout, the whole taking minutes."""

    def __init__(self, piece: int = 16, every: float = 0.25) -> None:
        self.piece, self.every = piece, every
        self.hung_up = 0
        self._trickling = threading.local()
        super().__init__()

    def _next(self, symbol: str) -> str:
        behaviour = super()._next(symbol)
        self._trickling.on = behaviour == "trickle"
        return "ok" if behaviour == "trickle" else behaviour

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub, base = self, super()._handler()

        class Trickling(base):  # type: ignore[valid-type,misc]
            def _send(
                self, status: int, body: bytes, content_type: str, send: int | None = None
            ) -> None:
                if not getattr(stub._trickling, "on", False):
                    super()._send(status, body, content_type, send)
                    return
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    for start in range(0, len(body), stub.piece):
                        self.wfile.write(body[start : start + stub.piece])
                        time.sleep(stub.every)
                except OSError:  # the client hung up
                    with stub._lock:
                        stub.hung_up += 1

        return Trickling


def fetch_guarded(client: AlphaVantageClient, symbol: str) -> Fetched | Exception:
    """``fetch_daily`` in a thread; the 60 s limit only stops a broken build from hanging."""
    outcome: list[Fetched | Exception] = []

    def fetch() -> None:
        try:
            outcome.append(client.fetch_daily(symbol, "compact"))
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=fetch, daemon=True)
    thread.start()
    thread.join(timeout=60)
    assert outcome, "the call was still reading a trickling answer after 60 s: no deadline"
    return outcome[0]


def test_a_trickling_answer_is_cut_at_the_deadline_then_retried(home: DataHome) -> None:
    """Per-read timeouts alone never fire on a trickle; the per-call deadline does."""
    with TricklingStub() as stub:
        client = AlphaVantageClient(
            home=home, api_key=TEST_KEY, base_url=stub.url, requests_per_second=0,
            requests_per_minute=0, requests_per_day=0, timeout_seconds=1.0,
            deadline_seconds=1.5, max_attempts=2, backoff_seconds=0.01,
        )  # fmt: skip
        stub.script("AAA", "trickle")
        fetched = fetch_guarded(client, "AAA")
        assert isinstance(fetched, Fetched), fetched
        assert fetched.series and stub.count("AAA") == 2

        stub.script("BBB", "trickle", "trickle")
        failed = fetch_guarded(client, "BBB")
        assert isinstance(failed, TransientHTTPError), failed
        assert "BBB: Alpha Vantage was still sending" in str(failed)
        assert TEST_KEY not in str(failed)
        assert stub.count("BBB") == 2
        deadline = time.monotonic() + 60
        while stub.hung_up < 3:  # the server learns of each hang-up at its next write
            assert time.monotonic() < deadline, f"{stub.hung_up} hang-ups seen, wanted 3"
            time.sleep(0.05)
        client.close()
