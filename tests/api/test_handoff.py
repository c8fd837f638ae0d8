"""Living beside the loader: the API lets go of the DuckDB file for writers and never fails.

Writers run as separate processes (``tests.api.writer``), as the pipeline's loader does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path

import duckdb
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from market_api.bars import queries
from market_api.readers.errors import StoreUnavailable
from market_api.readers.file import FileReader
from market_api.readers.locks import ReadWriteLock
from market_core import data_version
from market_core.handoff import VersionWatch, exclusive_write, write_lock, write_locked
from market_core.home import DataHome
from market_core.processes import owner_alive, process_start
from tests.api.conftest import REPO_ROOT, Dataset, MakeClient, run_writer, service_of
from tests.api.writer import load


def wait_for(condition: Callable[[], bool], what: str, limit: float = 5.0) -> None:
    """Poll a condition; the limit only stops a broken build from hanging."""
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.005)


def test_api_lets_go_for_a_writer_and_reopens_lazily_after(
    dataset: Dataset, make_client: MakeClient
) -> None:
    client = make_client(dataset.home, unavailable_wait_seconds=0.2)
    db = service_of(client).reader
    assert client.get("/instruments/AAPL/stats").status_code == 200
    assert db.is_open
    with write_lock(dataset.home):
        wait_for(lambda: not db.is_open, "the read-only connection closed")
        response = client.get("/instruments/MSFT/stats")  # a miss while the lock is held
        assert response.status_code == 503
        assert not db.is_open, "reopened while a writer was waiting"
    assert not db.is_open  # lazily: nothing reopens it until a query needs it
    assert client.get("/instruments/MSFT/stats").status_code == 200
    assert db.is_open


def test_a_writer_connects_while_the_api_holds_the_file(
    client: TestClient[Litestar], dataset: Dataset
) -> None:
    assert client.get("/instruments/AAPL/ohlcv?limit=1").status_code == 200
    assert service_of(client).reader.is_open
    rows = [["2024-05-01T00:00:00", "AAPL", 1.0, 2.0, 0.5, 1.5, 7]]
    # Dagster's backoff (0.1, 0.2, 0.4, 0.8 s) with only four retries is enough.
    result = run_writer("once", str(dataset.home.root), json.dumps(rows), "4")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["retries"] <= 4

    def sees_new_bar() -> bool:
        bars = client.get("/instruments/AAPL/ohlcv?limit=1").json()["bars"]
        return bool(bars[-1]["timestamp"] == "2024-05-01")

    wait_for(sees_new_bar, "the new bar served")


def files_of(root: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file under ``root`` with its size, mtime and content."""
    return {
        str(path.relative_to(root)): (path.stat().st_size, path.stat().st_mtime_ns,
                                      path.read_bytes())
        for path in sorted(root.rglob("*")) if path.is_file()
    }  # fmt: skip


def test_a_writer_killed_after_its_commit_blocks_no_reader_and_its_commit_reaches_them(
    dataset: Dataset, make_client: MakeClient
) -> None:
    """``kill -9`` after the commit, before the close and the data-version record: the kernel
    dropped the writer's lock, so a miss is answered (not a 503), and readers see the commit
    under a new data version that nobody published. Their checks change nothing on disk."""
    client = make_client(dataset.home, unavailable_wait_seconds=1.0)
    published = data_version.read(dataset.home.version_path)
    assert client.get("/health").json()["data_version"] == published
    assert client.get("/instruments/AAPL/ohlcv?limit=1").status_code == 200  # cached
    rows = [["2024-05-01T00:00:00", "AAPL", 1.0, 2.0, 0.5, 1.5, 7]]
    writer = subprocess.Popen(
        [sys.executable, "-m", "tests.api.writer", "commit", str(dataset.home.root),
         json.dumps(rows)],
        cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "committed"
        assert write_locked(dataset.home)
    finally:
        writer.kill()  # SIGKILL
        writer.wait(timeout=30)
    assert writer.returncode == -signal.SIGKILL
    on_disk = files_of(dataset.home.root)
    assert not write_locked(dataset.home)

    def sees_new_version() -> bool:
        return bool(client.get("/health").json()["data_version"] != published)

    wait_for(sees_new_version, "the unpublished commit served as a new data version")
    bars = client.get("/instruments/AAPL/ohlcv?limit=1").json()["bars"]
    assert bars[-1]["timestamp"] == "2024-05-01"  # the cached answer is gone
    assert client.get("/instruments/MSFT/stats").status_code == 200
    served = client.get("/health").json()["data_version"]
    assert VersionWatch(dataset.home).current() == served  # the same in a reader started now
    assert files_of(dataset.home.root) == on_disk, "a reader changed the data home"
    assert data_version.read(dataset.home.version_path) == published

    # The next loader publishes a real version for what it found, even if it changes nothing.
    with exclusive_write(dataset.home) as handoff:
        handoff.finish(changed=False)
    adopted = data_version.read(dataset.home.version_path)
    assert adopted not in (None, published)
    assert VersionWatch(dataset.home).current() == adopted


def test_process_start_reads_proc_stat_whatever_the_command_name(tmp_path: Path) -> None:
    """``/proc/<pid>/stat`` puts the command name, spaces and parentheses included, before
    the start time; checked against psutil's reading of the same process."""
    psutil = pytest.importorskip("psutil")
    odd = tmp_path / "w) (x y"
    odd.symlink_to(sys.executable)
    child = subprocess.Popen([str(odd), "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)  # fmt: skip
    try:
        start = process_start(child.pid)
        assert start is not None
        boot = psutil.boot_time()
        seconds = int(start) / os.sysconf("SC_CLK_TCK")
        assert abs(boot + seconds - psutil.Process(child.pid).create_time()) < 0.05
        assert owner_alive(child.pid, start)
        assert not owner_alive(child.pid, str(int(start) + 1))
    finally:
        child.communicate(timeout=30)
    assert not owner_alive(child.pid, start)


def test_a_writer_that_skips_the_lock_gives_503_not_500(
    dataset: Dataset, make_client: MakeClient
) -> None:
    """The file held read-write without the write lock: opening fails with IOException, which
    means 'wait'."""
    client = make_client(dataset.home, unavailable_wait_seconds=0.3)
    cached = client.get("/instruments")
    service_of(client).reader.close()
    holder = subprocess.Popen(
        [sys.executable, "-m", "tests.api.writer", "hold", str(dataset.home.root)],
        cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        response = client.get("/instruments/AAPL/ohlcv?limit=3")
        assert response.status_code == 503
        assert response.json()["status_code"] == 503
        assert client.get("/instruments").content == cached.content
    finally:
        holder.communicate(timeout=30)
    assert client.get("/instruments/AAPL/ohlcv?limit=3").status_code == 200


def test_no_errors_while_a_loader_writes_and_clients_read(
    dataset: Dataset, make_client: MakeClient
) -> None:
    client = make_client(dataset.home)
    writer = subprocess.Popen(
        [sys.executable, "-m", "tests.api.writer", "loop", str(dataset.home.root), "4"],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    statuses: Counter[int] = Counter()
    versions: set[str] = set()
    failures: list[str] = []
    lock = threading.Lock()

    def hammer(worker: int) -> None:
        i = 0
        while writer.poll() is None:
            i += 1
            urls = [
                "/instruments/AAPL/ohlcv?limit=5",  # mostly hits
                f"/instruments/MSFT/ohlcv?limit={1 + (i * 7 + worker) % 60}",  # misses
                "/instruments",
                f"/instruments/AAPL/stats?start=2024-0{1 + i % 4}-01",
                "/health",
            ]
            for url in urls:
                try:
                    response = client.get(url)
                except Exception as exc:  # reported below, never expected
                    with lock:
                        failures.append(repr(exc))
                    continue
                with lock:
                    statuses[response.status_code] += 1
                    if url == "/health" and response.status_code == 200:
                        versions.add(response.json()["data_version"])

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    out, err = writer.communicate(timeout=30)
    report = json.loads(out)
    assert failures == []
    assert set(statuses) == {200}, statuses
    assert sum(statuses.values()) > 50
    assert report["failures"] == 0, err
    assert report["writes"] >= 3
    assert len(versions) >= 2  # reads went on between writes, not only before or after

    def sees_every_write() -> bool:
        instruments = client.get("/instruments").json()["instruments"]
        aapl = next(i for i in instruments if i["symbol"] == "AAPL")
        return bool(aapl["bar_count"] == len(dataset.rows["AAPL"]) + report["writes"])

    wait_for(sees_every_write, "every written bar served")


def test_queries_racing_with_close_never_fail(dataset: Dataset) -> None:
    """Closing from another thread waits for running queries; they all get an answer."""
    db = FileReader(dataset.home, wait_seconds=5.0)
    expected = len(dataset.rows["AAPL"])
    errors: list[BaseException] = []
    results: list[int] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                rows = db.run(lambda cur: queries.bars(cur, "AAPL", queries.Interval.DAY,
                                                      None, None, None))  # fmt: skip
                results.append(len(rows))
            except BaseException as exc:
                errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(4)]
    for thread in readers:
        thread.start()
    deadline = time.monotonic() + 1.0
    closes = 0
    while time.monotonic() < deadline:
        db.close()
        closes += 1
        time.sleep(0.05)
    stop.set()
    for thread in readers:
        thread.join(timeout=30)
    db.shutdown()
    assert errors == []
    assert closes > 5 and len(results) > closes
    assert set(results) == {expected}


def test_unavailable_is_bounded_and_typed(dataset: Dataset) -> None:
    db = FileReader(dataset.home, wait_seconds=0.1, retry_after_seconds=3)
    with write_lock(dataset.home), pytest.raises(StoreUnavailable) as caught:
        db.run(queries.instruments)
    assert caught.value.retry_after_seconds == 3
    assert not db.is_open
    assert len(db.run(queries.instruments)) == 3
    db.shutdown()


def test_a_missing_file_reads_as_empty_and_is_not_created(tmp_path: Path) -> None:
    home = DataHome(tmp_path / "nothing")
    db = FileReader(home, wait_seconds=0.1)
    assert db.run(queries.instruments) == []
    assert db.run(queries.newest_bar_date) is None
    assert not db.run(lambda cur: queries.symbol_exists(cur, "AAPL"))
    assert db.run(lambda cur: queries.bars(cur, "AAPL", queries.Interval.WEEK,
                                           date(2024, 1, 1), None, 5)) == []  # fmt: skip
    assert db.data_version() is None
    assert not home.root.exists()  # nor the lock, nor the version record
    db.shutdown()


def test_the_data_version_moves_only_when_rows_may_have_changed(dataset: Dataset) -> None:
    """A load that changed nothing leaves the version (and so every reader's cache) alone; one
    that did, or one that cannot tell (``tests.api.writer``), publishes a new one."""
    db = FileReader(dataset.home, wait_seconds=1.0)
    published = db.data_version()
    assert published is not None and published == data_version.read(dataset.home.version_path)
    with exclusive_write(dataset.home) as handoff:
        assert write_locked(dataset.home)
        assert db.data_version() == published  # the file is in flux: the last version stands
        handoff.finish(changed=False)
    assert db.data_version() == published
    load(dataset.home, [(datetime(2024, 5, 1), "AAPL", 1.0, 2.0, 0.5, 1.5, 7)])
    assert db.data_version() not in (None, published)
    assert db.data_version() == data_version.read(dataset.home.version_path)
    db.shutdown()


def test_read_write_lock_excludes_and_prefers_the_closer() -> None:
    lock = ReadWriteLock()
    events: list[str] = []
    reader_in = threading.Event()
    release_reader = threading.Event()

    def first_reader() -> None:
        with lock.shared():
            events.append("reader 1 in")
            reader_in.set()
            release_reader.wait(5)
            events.append("reader 1 out")

    def closer() -> None:
        with lock.exclusive():
            events.append("closer")

    def late_reader() -> None:
        with lock.shared():
            events.append("reader 2")

    t1 = threading.Thread(target=first_reader)
    t1.start()
    reader_in.wait(5)
    t2 = threading.Thread(target=closer)
    t2.start()
    time.sleep(0.05)  # let the closer queue up
    t3 = threading.Thread(target=late_reader)
    t3.start()
    time.sleep(0.05)
    assert events == ["reader 1 in"]  # the closer waits for reader 1; reader 2 waits for it
    release_reader.set()
    for thread in (t1, t2, t3):
        thread.join(5)
    assert events == ["reader 1 in", "reader 1 out", "closer", "reader 2"]


def test_the_api_connection_cannot_change_data(dataset: Dataset) -> None:
    db = FileReader(dataset.home, wait_seconds=0.1)
    with pytest.raises(duckdb.Error, match="read-only"):
        db.run(lambda cur: cur.execute("DELETE FROM ohlcv_data"))
    assert len(db.run(queries.instruments)) == 3
    db.shutdown()
