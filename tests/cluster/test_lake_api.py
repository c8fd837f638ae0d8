"""The API on the shared lake: replicas on separate data homes, commits from another process,
time travel, and one snapshot per answer.

Each "machine" is its own data home; they share only ``MARKET_POSTGRES_URL`` (a real
PostgreSQL, the lake's catalog) and ``MARKET_SHARED_HOME`` (the lake's files). The replicas are
real servers started by the ``make api`` command; every commit comes from a process of its own
that writes through ``market_core.lake.connect`` and plain SQL, as any loader of the lake does.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
from litestar.testing import TestClient

from market_api.app import create_app
from market_api.readers.lake import LakeReader
from market_api.settings import Settings
from market_core.home import DataHome
from market_core.lake import LakeSettings, connect, snapshot_id
from market_core.schema import ACTIONS_TABLE, TABLE
from tests.cluster.services import PostgresService
from tests.reliability.processes import REPO, clean_env
from tests.served_api import Served, free_port, serve

WAIT_SECONDS = 30.0
"""Bound of every wait for a replica to serve a commit (the design serves it within ~0.1 s;
the bound only keeps a broken replica from hanging the suite)."""

Bar = tuple[str, str, float, float, float, float, int]
"""timestamp (ISO), symbol, open, high, low, close, volume."""

WRITER = """
import json, sys
from market_core.lake import LakeSettings, connect, snapshot_id
bars, splits = json.loads(sys.argv[1]), json.loads(sys.argv[2])
conn = connect(LakeSettings.from_env())
conn.begin()
for ts, symbol, *_ in bars:
    conn.execute("DELETE FROM ohlcv_data WHERE symbol = ? AND timestamp = ?", [symbol, ts])
if bars:
    conn.executemany("INSERT INTO ohlcv_data VALUES (?, ?, ?, ?, ?, ?, ?)", bars)
if splits:
    conn.executemany(
        "INSERT INTO corporate_actions (symbol, ex_date, kind, split_factor) "
        "VALUES (?, ?, 'split', ?)", splits,
    )
conn.commit()
print(snapshot_id(conn))
"""


def trading_days(first: date, count: int) -> list[date]:
    days: list[date] = []
    day = first
    while len(days) < count:
        if day.weekday() < 5:
            days.append(day)
        day += timedelta(days=1)
    return days


def make_bars(symbol: str, first: date, count: int, base: float) -> list[Bar]:
    bars: list[Bar] = []
    for i, day in enumerate(trading_days(first, count)):
        open_ = round(base + i * 0.5, 2)
        close = round(open_ + (0.25 if i % 2 else -0.25), 2)
        bars.append((f"{day}T00:00:00", symbol, open_, round(max(open_, close) + 1, 2),
                     round(min(open_, close) - 1, 2), close, 1_000_000 + i * 1000))  # fmt: skip
    return bars


def as_json_bar(bar: Bar) -> dict[str, Any]:
    ts, _, open_, high, low, close, volume = bar
    return {"timestamp": ts[:10], "open": open_, "high": high, "low": low, "close": close,
            "volume": volume}  # fmt: skip


@dataclass(frozen=True)
class Lake:
    """One lake: its two shared variables, and a way to commit from a process of its own."""

    url: str
    shared: Path
    scratch: Path

    def env(self) -> dict[str, str]:
        return {"MARKET_POSTGRES_URL": self.url, "MARKET_SHARED_HOME": str(self.shared)}

    def machine(self, name: str) -> DataHome:
        """A data home of its own: nothing in it is shared."""
        root = self.scratch / name
        root.mkdir(parents=True, exist_ok=True)
        return DataHome(root)

    def commit(self, bars: list[Bar], splits: list[tuple[str, str, float]] | None = None) -> int:
        """Replace or add ``bars`` (and add ``splits``) in one transaction, from a new process
        on a machine of its own; the snapshot id it committed."""
        home = self.machine("writer")
        done = subprocess.run(
            [sys.executable, "-c", WRITER, json.dumps(bars), json.dumps(splits or [])],
            cwd=REPO, env=clean_env(MARKET_DATA_HOME=str(home.root), **self.env()),
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        return int(done.stdout.split()[-1])

    def settings(self) -> LakeSettings:
        return LakeSettings(self.url, str(self.shared), self.scratch / "test-extensions")

    def snapshot_time(self, snapshot: int) -> datetime:
        conn = connect(self.settings(), read_only=True)
        try:
            row = conn.execute(
                "SELECT snapshot_time FROM ducklake_snapshots('lake') WHERE snapshot_id = ?",
                [snapshot],
            ).fetchone()
        finally:
            conn.close()
        assert row is not None
        moment: datetime = row[0]
        return moment.astimezone(UTC)


def new_lake(postgres: PostgresService, root: Path) -> Lake:
    """A lake of its own: a fresh catalog database and a fresh shared folder."""
    shared = root / "shared"
    shared.mkdir(parents=True)
    return Lake(postgres.fresh_database(), shared, root / "machines")


@pytest.fixture
def lake(postgres: PostgresService, tmp_path: Path) -> Lake:
    return new_lake(postgres, tmp_path)


AAPL = make_bars("AAPL", date(2024, 1, 2), 60, 180.0)
MSFT = make_bars("MSFT", date(2024, 1, 2), 40, 370.0)
NVDA = make_bars("NVDA", date(2024, 1, 2), 30, 480.0)
"""Only the revision test changes NVDA; the other tests read AAPL and MSFT."""
SPLITS = [("AAPL", "2024-02-01", 4.0)]


def get(served: Served, path: str, **headers: str) -> requests.Response:
    return requests.get(f"{served.base}{path}", headers=headers, timeout=30)


def wait_until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not check():
        assert time.monotonic() < deadline, f"not within {WAIT_SECONDS:.0f} s: {what}"
        time.sleep(0.05)


@dataclass(frozen=True)
class Replicas:
    lake: Lake
    a: Served
    b: Served


@pytest.fixture(scope="module")
def replicas(
    postgres: PostgresService, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Replicas]:
    """Two API replicas (``make api``), each on a data home of its own, on one loaded lake
    (started once for the module: a replica takes seconds to start)."""
    root = tmp_path_factory.mktemp("lake-api")
    lake = new_lake(postgres, root)
    lake.commit(AAPL + MSFT + NVDA, SPLITS)
    with ExitStack() as stack:
        a, b = (
            stack.enter_context(serve(lake.machine(name), root / f"{name}.log", **lake.env()))
            for name in ("api-a", "api-b")
        )
        yield Replicas(lake, a, b)


QUESTIONS = [
    "/health",
    "/instruments",
    "/instruments/AAPL/ohlcv",
    "/instruments/aapl/ohlcv?interval=1w&adjustment=all",
    "/instruments/MSFT/ohlcv?start=2024-01-10&end=2024-02-01&limit=5",
    "/instruments/AAPL/stats?adjustment=split",
    "/instruments/AAPL/corporate-actions",
]


def test_two_replicas_serve_identical_exact_answers(replicas: Replicas) -> None:
    a, b = replicas.a, replicas.b
    for path in QUESTIONS:
        first, second = get(a, path), get(b, path)
        assert first.status_code == second.status_code == 200, (path, first.text, second.text)
        assert first.content == second.content, path
        assert first.headers["etag"] == second.headers["etag"], path
    # Exact: the bars as committed, and the split applied at read time.
    assert get(a, "/instruments/AAPL/ohlcv").json()["bars"] == [as_json_bar(b) for b in AAPL]
    adjusted = get(b, "/instruments/AAPL/ohlcv?end=2024-01-31&adjustment=split").json()["bars"]
    raw_before_split = [as_json_bar(bar) for bar in AAPL if bar[0] < "2024-02-01"]
    assert [bar["close"] for bar in adjusted] == [bar["close"] / 4 for bar in raw_before_split]
    assert [bar["volume"] for bar in adjusted] == [bar["volume"] * 4 for bar in raw_before_split]
    counts = {i["symbol"]: i["bar_count"] for i in get(a, "/instruments").json()["instruments"]}
    assert (counts["AAPL"], counts["MSFT"]) == (60, 40)
    assert get(a, "/health").json()["data_version"] == str(lake_snapshot(replicas.lake))
    assert get(a, "/instruments/ZZZ/ohlcv").status_code == 404


def lake_snapshot(lake: Lake) -> int:
    conn = connect(lake.settings(), read_only=True)
    try:
        return snapshot_id(conn)
    finally:
        conn.close()


def test_a_revision_reaches_both_replicas_and_as_of_reads_either_side(
    replicas: Replicas,
) -> None:
    a, b, lake = replicas.a, replicas.b, replicas.lake
    path = "/instruments/NVDA/ohlcv?start=2024-02-01"
    before = get(a, path)
    assert get(b, path).content == before.content  # now cached by both
    old_version = get(a, "/health").json()["data_version"]
    revised = (*NVDA[-1][:5], NVDA[-1][5] + 7.5, *NVDA[-1][6:])
    added = make_bars("NVDA", date(2024, 1, 2), 31, 480.0)[-1]  # the next trading day
    assert added[0] > NVDA[-1][0]
    version = lake.commit([revised, added], [("NVDA", "2024-03-01", 2.0)])
    assert str(version) != old_version

    for served in (a, b):
        wait_until(
            lambda s=served: get(s, path).content != before.content,  # type: ignore[misc]
            f"{served.base} serves the revised bar",
        )
    after_a, after_b = get(a, path), get(b, path)
    assert after_a.content == after_b.content
    bars = after_a.json()["bars"]
    assert bars[-2:] == [as_json_bar(revised), as_json_bar(added)]
    assert bars[:-2] == [as_json_bar(bar) for bar in NVDA[:-1] if bar[0] >= "2024-02-01"]
    assert get(a, "/health").json()["data_version"] == str(version)
    # The old ETag is stale on both replicas: a full answer, not a 304.
    for served in (a, b):
        fresh = get(served, path, **{"If-None-Match": before.headers["etag"]})
        assert fresh.status_code == 200
        assert fresh.headers["etag"] != before.headers["etag"]

    # Time travel: the snapshot before the revision and the one after, on both replicas.
    old_time = lake.snapshot_time(int(old_version))
    new_time = lake.snapshot_time(version)
    assert old_time < new_time
    between = old_time + (new_time - old_time) / 2
    for served in (a, b):
        for moment in (old_time, between):
            then = get(served, f"{path}&as_of={quote(moment.isoformat())}")
            assert then.status_code == 200, then.text
            assert then.json() == before.json()
        now = get(served, f"{path}&as_of={quote(new_time.isoformat())}")
        assert now.json() == after_a.json()
    # A time to come answers as the data stands now (never past the answer's own snapshot).
    assert get(a, f"{path}&as_of=2999-01-01T00:00:00Z").json() == after_a.json()
    naive_utc = old_time.replace(tzinfo=None).isoformat()
    assert get(b, f"{path}&as_of={naive_utc}").json() == before.json()
    # Adjusted answers travel too: the split committed with the revision halves the prices
    # before it now, and did not exist then.
    early = "/instruments/NVDA/ohlcv?end=2024-02-29&adjustment=split"
    then = get(a, f"{early}&as_of={quote(old_time.isoformat())}").json()["bars"]
    now = get(a, f"{early}&as_of={quote(new_time.isoformat())}").json()["bars"]
    assert NVDA[-1][0] < "2024-03-01"
    assert [bar["close"] for bar in then] == [bar[5] for bar in NVDA]
    assert [bar["close"] for bar in now] == [bar[5] / 2 for bar in (*NVDA[:-1], revised, added)]
    assert get(b, early).json()["bars"] == now


@pytest.mark.parametrize(
    ("query", "word"),
    [
        ("as_of=2001-01-01T00:00:00Z", "oldest snapshot"),
        ("as_of=not-a-time", "as_of"),
        ("as_of=2024-03-01", "as_of"),
        ("as_of=2030-01-01T00:00:00Z&as_of=2031-01-01T00:00:00Z", "more than once"),
    ],
)
def test_bad_as_of_is_a_400_naming_it(replicas: Replicas, query: str, word: str) -> None:
    response = get(replicas.a, f"/instruments/AAPL/ohlcv?{query}")
    assert response.status_code == 400, response.text
    assert response.json()["parameter"] == "as_of"
    assert word in response.json()["detail"]


def test_an_answer_reads_the_snapshot_of_its_version_after_a_newer_commit(lake: Lake) -> None:
    """The reader's pin: a question filed under a version reads that snapshot, every query of
    it, even when a load committed since (here, before the question even starts)."""
    first = lake.commit(AAPL[:10])
    db = LakeReader(lake.settings())
    try:
        db.poll()
        assert db.data_version() == str(first)
        second = lake.commit([(*AAPL[0][:5], 999.0, *AAPL[0][6:]), *AAPL[10:20]])

        def question(cur: Any) -> tuple[int, float, int]:
            count = cur.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0]
            close = cur.execute(
                f"SELECT close FROM {TABLE} WHERE timestamp = ?", [AAPL[0][0]]
            ).fetchone()[0]
            actions = cur.execute(f"SELECT count(*) FROM {ACTIONS_TABLE}").fetchone()[0]
            return count, close, actions

        assert db.run(question) == (10, AAPL[0][5], 0)  # not polled yet: the old version
        assert db.run_at(str(first), question) == (10, AAPL[0][5], 0)

        def polled() -> bool:
            db.poll()
            return db.data_version() == str(second)

        wait_until(polled, "the reader's poll sees the second commit")
        assert db.run(question) == (20, 999.0, 0)
        assert db.run_at(str(first), question) == (10, AAPL[0][5], 0)  # and back again
    finally:
        db.shutdown()


def test_an_unreachable_catalog_is_a_503_without_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """A replica whose catalog is down answers 503 with Retry-After, and says where it looked
    without the password, in the answer and in its log."""
    closed = free_port()  # nobody listens there
    password = "s3cret-Pa55"
    monkeypatch.setenv(
        "MARKET_POSTGRES_URL", f"postgresql://market:{password}@127.0.0.1:{closed}/m"
    )
    monkeypatch.setenv("MARKET_SHARED_HOME", str(tmp_path / "shared"))
    monkeypatch.setenv("MARKET_DATA_HOME", str(tmp_path / "home"))
    settings = Settings(home=DataHome(tmp_path / "home"), unavailable_wait_seconds=1.0)
    with TestClient(app=create_app(settings)) as client:
        for path in ("/health", "/instruments/AAPL/ohlcv?as_of=2024-01-01T00:00:00Z"):
            response = client.get(path)
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"] == "1"
            assert response.json()["error"] == "data_unavailable"
            assert password not in response.text
    log = capfd.readouterr().err
    assert f"127.0.0.1:{closed}" in log  # it did try, and said where
    assert password not in log
