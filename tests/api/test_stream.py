"""The push stream served as users run it (``make api``'s granian on loopback), read by a real
HTTP client, while the pipeline's own file store (``DuckDBFileStore``) commits loads."""

from __future__ import annotations

import contextlib
import http.client
import json
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import duckdb
import polars as pl
import pytest

from market_core.home import DataHome
from market_core.schema import COLUMNS
from market_pipeline.store.duckdb_file import DuckDBFileStore
from tests.served_api import Served, serve

READ_SECONDS = 20.0
FIRST_DAY = datetime(2024, 1, 1)


def bars(symbol: str, days: int, close: float = 10.0, first: int = 0) -> pl.DataFrame:
    stamps = [FIRST_DAY + timedelta(days=first + i) for i in range(days)]
    return pl.DataFrame(
        {
            "timestamp": stamps,
            "symbol": [symbol] * days,
            "open": [close] * days,
            "high": [close + 1] * days,
            "low": [close - 1] * days,
            "close": [close] * days,
            "volume": [1000] * days,
        }
    ).select(COLUMNS)


def day(n: int) -> str:
    return (FIRST_DAY + timedelta(days=n)).date().isoformat()


def store(home: DataHome) -> DuckDBFileStore:
    return DuckDBFileStore(database=str(home.duckdb_path))


@dataclass
class Event:
    event: str = "message"
    data: str = ""
    id: str | None = None

    @property
    def bar(self) -> dict[str, object]:
        assert self.event == "bar", self
        value: dict[str, object] = json.loads(self.data)
        return value


@dataclass
class SseClient:
    """A stream read line by line through ``http.client`` (chunked decoding included)."""

    response: http.client.HTTPResponse
    conn: http.client.HTTPConnection
    comments: list[str] = field(default_factory=list)

    def next_event(self, timeout: float = READ_SECONDS) -> Event:
        deadline = time.monotonic() + timeout
        event = Event()
        seen = False
        while time.monotonic() < deadline:
            line = self.response.readline()
            if not line:
                raise EOFError("the stream ended")
            text = line.decode().rstrip("\n")
            if not text:
                if seen:
                    return event
                continue
            if text.startswith(":"):
                self.comments.append(text)
                continue
            name, _, value = text.partition(": ")
            seen = True
            if name == "data":
                event.data = value
            elif name == "event":
                event.event = value
            elif name == "id":
                event.id = value
        raise TimeoutError("no event in time")

    def events(self, count: int) -> list[Event]:
        return [self.next_event() for _ in range(count)]

    def close(self) -> None:
        self.conn.close()


def open_stream(
    base: str,
    path: str,
    headers: dict[str, str] | None = None,
    rcvbuf: int | None = None,
) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    url = urlsplit(base)
    assert url.hostname is not None and url.port is not None
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=READ_SECONDS)
    if rcvbuf is not None:  # a small window before connecting: the server's writes back up
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(READ_SECONDS)
        sock.connect((url.hostname, url.port))
        conn.sock = sock
    conn.request("GET", path, headers={"Accept": "text/event-stream", **(headers or {})})
    return conn, conn.getresponse()


@contextlib.contextmanager
def stream(base: str, path: str, headers: dict[str, str] | None = None) -> Iterator[SseClient]:
    conn, response = open_stream(base, path, headers)
    assert response.status == 200, response.read()
    assert response.getheader("content-type", "").startswith("text/event-stream")
    client = SseClient(response, conn)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> DataHome:
    """AAPL and MSFT loaded in one commit (commit 1), through the pipeline's store."""
    home = DataHome(tmp_path_factory.mktemp("stream") / "home")
    home.root.mkdir(parents=True)
    store(home).load([bars("AAPL", 5), bars("MSFT", 3, close=20.0)])
    return home


@pytest.fixture
def home(template: DataHome, tmp_path: Path) -> DataHome:
    home = DataHome(tmp_path / "home")
    home.root.mkdir()
    for path in (template.duckdb_path, template.version_path):
        shutil.copy2(path, home.root / path.name)
    return home


@contextlib.contextmanager
def served(home: DataHome, tmp_path: Path, **env: str) -> Iterator[Served]:
    with serve(home, tmp_path / "api.log", **env) as api:
        yield api


def test_connect_gives_the_newest_bar_then_each_commit_in_order(
    home: DataHome, tmp_path: Path
) -> None:
    with served(home, tmp_path) as api, stream(api.base, "/instruments/aapl/stream") as client:
        first = client.next_event()
        assert first.id == "1"
        assert first.bar == {
            "symbol": "AAPL",
            "interval": "1d",
            "timestamp": day(4),
            "open": 10.0,
            "high": 11.0,
            "low": 9.0,
            "close": 10.0,
            "volume": 1000,
            "revised": False,
        }
        revised = bars("AAPL", 1, close=12.5, first=4)
        store(home).load([revised, bars("AAPL", 2, first=5), bars("MSFT", 1, first=3)])
        events = client.events(3)
        assert [e.id for e in events] == ["2.0", "2.1", "2.2"]
        assert [(e.bar["timestamp"], e.bar["revised"]) for e in events] == [
            (day(4), True),
            (day(5), False),
            (day(6), False),
        ]
        assert events[0].bar["close"] == 12.5
        store(home).load([bars("MSFT", 1, first=3)])  # identical: no commit, no event
        store(home).load([bars("AAPL", 1, close=13.0, first=6)])
        later = client.next_event()
        assert later.id == "3.0", "the identical load made no commit"
        assert later.bar["timestamp"] == day(6) and later.bar["close"] == 13.0


def test_a_multi_symbol_stream_follows_each_of_its_symbols(home: DataHome, tmp_path: Path) -> None:
    with (
        served(home, tmp_path) as api,
        stream(api.base, "/stream?symbols=msft,AAPL&adjustment=raw") as client,
    ):
        opening = client.events(2)
        assert {e.bar["symbol"]: e.bar["timestamp"] for e in opening} == {
            "AAPL": day(4),
            "MSFT": day(2),
        }
        store(home).load([bars("MSFT", 1, first=3), bars("AAPL", 1, first=5)])
        events = client.events(2)
        assert [(e.id, e.bar["symbol"]) for e in events] == [("2.0", "AAPL"), ("2.1", "MSFT")]


def test_resume_gets_exactly_what_changed_since_the_id(home: DataHome, tmp_path: Path) -> None:
    store(home).load([bars("AAPL", 3, first=5), bars("MSFT", 1, first=3)])  # commit 2
    store(home).load([bars("AAPL", 1, close=11.0, first=7)])  # commit 3
    with served(home, tmp_path) as api:
        with stream(api.base, "/instruments/AAPL/stream", {"Last-Event-ID": "2.0"}) as client:
            events = client.events(3)
            assert [(e.id, e.bar["timestamp"], e.bar["revised"]) for e in events] == [
                ("2.1", day(6), False),
                ("2.2", day(7), False),
                ("3.0", day(7), True),
            ]
            store(home).load([bars("AAPL", 1, first=8)])
            assert client.next_event().id == "4.0", "then it follows new commits"
        with stream(api.base, "/instruments/AAPL/stream", {"Last-Event-ID": "3"}) as client:
            assert client.next_event().id == "4.0"
        with stream(api.base, "/stream?symbols=MSFT", {"Last-Event-ID": "1"}) as client:
            event = client.next_event()
            assert (event.id, event.bar["timestamp"]) == ("2.3", day(3))


def test_an_id_older_than_the_kept_log_gets_a_reset_then_the_newest_bar(
    home: DataHome, tmp_path: Path
) -> None:
    store(home).load([bars("AAPL", 1, first=5)])  # commit 2
    with duckdb.connect(str(home.duckdb_path)) as conn:
        conn.execute("UPDATE bar_commits SET committed_at = now() - INTERVAL 30 DAY")
    store(home).load([bars("AAPL", 1, first=6)])  # commit 3 prunes 1 and 2
    with served(home, tmp_path) as api:
        for stale in ("1", "0.5", "99", "not-an-id"):
            headers = {"Last-Event-ID": stale}
            with stream(api.base, "/instruments/AAPL/stream", headers) as client:
                reset = client.next_event()
                assert reset.event == "reset", stale
                newest = client.next_event()
                assert (newest.id, newest.bar["timestamp"]) == ("3", day(6))
        with stream(api.base, "/instruments/AAPL/stream", {"Last-Event-ID": "2"}) as client:
            assert client.next_event().id == "3.0", "commit 2 seen whole: 3 is still kept"


def test_a_silent_stream_sends_heartbeat_comments(home: DataHome, tmp_path: Path) -> None:
    with (
        served(home, tmp_path, MARKET_API_STREAM_HEARTBEAT_SECONDS="0.2") as api,
        stream(api.base, "/instruments/AAPL/stream") as client,
    ):
        client.next_event()
        with pytest.raises(TimeoutError):
            client.next_event(timeout=1.5)
        assert len(client.comments) >= 2
        assert all(c.startswith(":") for c in client.comments)


def test_adjusted_stream_applies_the_endpoints_adjustment(home: DataHome, tmp_path: Path) -> None:
    with duckdb.connect(str(home.duckdb_path)) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS corporate_actions (symbol VARCHAR, ex_date DATE, "
            "kind VARCHAR, split_factor DOUBLE, amount DOUBLE, declaration_date DATE, "
            "record_date DATE, payment_date DATE, UNIQUE (symbol, ex_date, kind))"
        )
        conn.execute(
            "INSERT INTO corporate_actions VALUES ('AAPL', ?, 'split', 2.0, NULL, NULL, NULL, "
            "NULL)",
            [(FIRST_DAY + timedelta(days=30)).date()],
        )
    with served(home, tmp_path) as api:
        query = "?adjustment=split"
        with stream(api.base, f"/instruments/AAPL/stream{query}") as client:
            newest = client.next_event().bar
            with urlopen_json(f"{api.base}/instruments/AAPL/ohlcv{query}") as answer:
                expected = answer["bars"][-1]
            assert {k: newest[k] for k in expected} == expected
            assert newest["close"] == 5.0 and newest["volume"] == 2000


@contextlib.contextmanager
def urlopen_json(url: str) -> Iterator[dict[str, list[dict[str, object]]]]:
    import urllib.request

    with urllib.request.urlopen(url, timeout=READ_SECONDS) as answer:
        yield json.loads(answer.read())


def test_a_slow_client_is_dropped_while_another_gets_every_event(
    home: DataHome, tmp_path: Path
) -> None:
    store(home).load([bars("AAPL", 3000, close=1.0)])
    commits = 14  # ~570 kB of events each: past the sockets' buffers and a queue of 2
    with served(home, tmp_path, MARKET_API_STREAM_QUEUE_COMMITS="2") as api:
        slow_conn, slow = open_stream(api.base, "/instruments/AAPL/stream", rcvbuf=4096)
        assert slow.status == 200
        with stream(api.base, "/instruments/AAPL/stream") as fast:
            fast.next_event()
            for k in range(commits):
                store(home).load([bars("AAPL", 3000, close=2.0 + k)])
                events = fast.events(3000)
                assert {e.bar["close"] for e in events} == {2.0 + k}
        slow_conn.sock.settimeout(READ_SECONDS)  # type: ignore[union-attr]
        received = 0
        with contextlib.suppress(http.client.IncompleteRead, ConnectionError, EOFError):
            while chunk := slow.read1(65536):
                received += chunk.count(b"event: bar")
        slow_conn.close()
        assert 0 < received < 1 + commits * 3000, "the slow stream was cut short, and ended"


def test_beyond_the_client_cap_a_503_with_retry_after(home: DataHome, tmp_path: Path) -> None:
    with served(home, tmp_path, MARKET_API_STREAM_MAX_CLIENTS="2") as api:
        with (
            stream(api.base, "/instruments/AAPL/stream") as one,
            stream(api.base, "/stream?symbols=MSFT") as two,
        ):
            one.next_event()
            two.next_event()
            conn, refused = open_stream(api.base, "/instruments/AAPL/stream")
            assert refused.status == 503
            assert int(refused.getheader("Retry-After", "0")) >= 1
            assert json.loads(refused.read())["error"] == "too_many_streams"
            conn.close()
        deadline = time.monotonic() + READ_SECONDS
        while True:  # the closed streams' slots come back once the server sees them gone
            conn, answer = open_stream(api.base, "/instruments/AAPL/stream")
            status = answer.status
            conn.close()
            if status == 200:
                break
            assert time.monotonic() < deadline, "the slots never came back"
            time.sleep(0.2)


@pytest.mark.parametrize(
    ("path", "status", "parameter", "named"),
    [
        ("/instruments/ZZZZ/stream", 404, None, "ZZZZ"),
        ("/stream?symbols=AAPL,zzzz,MSFT", 404, None, "ZZZZ"),
        ("/stream?symbols=" + ",".join(f"S{i}" for i in range(101)), 400, "symbols", "100"),
        ("/stream?symbols=AAPL,a$b", 400, "symbols", "a$b"),
        ("/stream?symbols=AAPL,,MSFT", 400, "symbols", "empty"),
        ("/stream", 400, "symbols", "symbols"),
        ("/instruments/a$b/stream", 400, "symbol", "symbol"),
        ("/instruments/AAPL/stream?interval=1w", 400, "interval", "stored bars"),
        ("/instruments/AAPL/stream?interval=2min", 400, "interval", "1min"),
        ("/instruments/AAPL/stream?adjustment=bogus", 400, "adjustment", "adjustment"),
        ("/instruments/AAPL/stream?adjustment=raw&adjustment=all", 400, "adjustment", "once"),
    ],
)
def test_bad_input_follows_the_apis_400_and_404_rules(
    served_once: Served, path: str, status: int, parameter: str | None, named: str
) -> None:
    conn, answer = open_stream(served_once.base, path)
    body = json.loads(answer.read())
    conn.close()
    assert answer.status == status, body
    assert body["status_code"] == status and body["parameter"] == parameter
    assert named in body["detail"]


@pytest.fixture(scope="module")
def served_once(template: DataHome, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve(template, tmp_path_factory.mktemp("api") / "api.log") as api:
        yield api


def intraday(interval: str, minutes: list[int], close: float = 10.0) -> pl.DataFrame:
    stamps = [datetime(2024, 1, 2, 9, 30) + timedelta(minutes=m) for m in minutes]
    count = len(stamps)
    return pl.DataFrame(
        {
            "timestamp": stamps,
            "symbol": ["AAPL"] * count,
            "interval": [interval] * count,
            "open": [close] * count,
            "high": [close + 1] * count,
            "low": [close - 1] * count,
            "close": [close] * count,
            "volume": [100] * count,
        }
    )


def test_an_intraday_stream_carries_its_interval_only(home: DataHome, tmp_path: Path) -> None:
    store(home).load_intraday([intraday("5min", [0, 5]), intraday("1min", [0, 1])])  # commit 2
    path = "/instruments/AAPL/stream?interval=5min"
    with served(home, tmp_path) as api, stream(api.base, path) as client:
        newest = client.next_event()
        with urlopen_json(f"{api.base}/instruments/AAPL/ohlcv?interval=5min") as answer:
            expected = answer["bars"][-1]
        assert newest.id == "2" and newest.bar["interval"] == "5min"
        assert {k: newest.bar[k] for k in expected} == expected
        assert newest.bar["timestamp"] == "2024-01-02T09:35:00-05:00"
        store(home).load_intraday([intraday("1min", [2]), intraday("5min", [5], close=11.0)])
        store(home).load_intraday([intraday("5min", [10])])
        events = client.events(2)
        assert [(e.id, e.bar["timestamp"], e.bar["revised"]) for e in events] == [
            ("3.1", "2024-01-02T09:35:00-05:00", True),
            ("4.0", "2024-01-02T09:40:00-05:00", False),
        ]
