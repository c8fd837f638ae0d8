"""An API replica in lake mode through a 20-s outage of the catalog's PostgreSQL.

The replica is the real ``make api`` server on a data home of its own; the catalog is a
PostgreSQL of the test's own (``own_postgres``), stopped and started again on the same port. Two
client threads ask throughout: one for answers the replica has cached (hits), one for answers
it has not (misses: a new ``limit`` each time). A push-stream client stays connected across the
outage. The loads come from the pipeline's lake store in this process, as from another machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import requests

from market_pipeline.store.lake import LakeStore
from tests.api.test_stream import bars, day, open_stream, stream
from tests.cluster.api_load import Load, assert_no_5xx_but_503_with_retry_after, running
from tests.cluster.services import PostgresService
from tests.cluster.test_lake_api import Lake, lake_snapshot, new_lake
from tests.reliability.processes import REPO, clean_env
from tests.served_api import serve

OUTAGE_SECONDS = 20.0
RECOVERY_BOUND_SECONDS = 30.0
"""The bounded wait for the first good miss once PostgreSQL is back."""
WAIT_SECONDS = 30.0
HITS = ("/health", "/instruments", "/instruments/AAPL/ohlcv", "/instruments/MSFT/ohlcv?limit=2")
MISS = "/instruments/AAPL/ohlcv?limit={n}"
HEARTBEAT_SECONDS = "1"


def writer(lake: Lake) -> LakeStore:
    return LakeStore(
        postgres_url=lake.url,
        shared_home=str(lake.shared),
        data_home=str(lake.machine("writer").root),
    )


def wait_for(what: str, check: Callable[[], object], bound: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + bound
    while not check():
        assert time.monotonic() < deadline, f"not within {bound:.0f} s: {what}"
        time.sleep(0.05)


def test_a_replica_serves_hits_through_a_catalog_outage_and_misses_again_after(
    own_postgres: PostgresService, tmp_path: Path
) -> None:
    lake = new_lake(own_postgres, tmp_path)
    store = writer(lake)
    store.load([bars("AAPL", 5), bars("MSFT", 3, close=20.0)])
    log_path = tmp_path / "api.log"
    env = {**lake.env(), "MARKET_API_STREAM_HEARTBEAT_SECONDS": HEARTBEAT_SECONDS}
    with serve(lake.machine("api"), log_path, **env) as api:
        for path in HITS:  # now cached
            assert requests.get(api.base + path, timeout=30).status_code == 200, path
        with (
            stream(api.base, "/stream?symbols=AAPL") as follower,
            running(Load(api.base, HITS, MISS)) as load,
        ):
            opening = follower.next_event()
            assert (opening.event, opening.bar["timestamp"]) == ("bar", day(4))
            time.sleep(2)
            log_before = log_path.read_text()
            stopping = time.monotonic()
            own_postgres.stop_server()
            stopped = time.monotonic()

            wait_for("a miss answered 503", lambda: load.of("miss", after=stopped) and any(
                a.status == 503 for a in load.of("miss", after=stopped)))  # fmt: skip
            detected = min(a.ended for a in load.of("miss", after=stopping) if a.status == 503)
            # A stream asked for now cannot start: a 503 like any miss, at once.
            conn, refused = open_stream(api.base, "/stream?symbols=MSFT")
            try:
                assert refused.status == 503, refused.read()
                assert refused.getheader("retry-after") is not None
                assert json.loads(refused.read())["error"] == "data_unavailable"
            finally:
                conn.close()
            time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - stopped)))

            restarting = time.monotonic()
            own_postgres.start_server()
            up = time.monotonic()

            def good_miss() -> bool:
                return any(a.status == 200 for a in load.of("miss", after=up))

            wait_for("a miss answered 200 again", good_miss, RECOVERY_BOUND_SECONDS)
            first_good = min(a.ended for a in load.of("miss", after=up) if a.status == 200)
            outage_log = log_path.read_text()[len(log_before) :]

            # A load committed after the outage: every answer and the stream follow it.
            store = writer(lake)
            store.load([bars("AAPL", 1, close=12.0, first=5)])
            version = str(lake_snapshot(lake))
            wait_for("the replica serves the load committed after the outage", lambda: (
                requests.get(api.base + "/health", timeout=10).json()["data_version"] == version
            ))  # fmt: skip
            newest = requests.get(api.base + "/instruments/AAPL/ohlcv", timeout=10).json()
            assert newest["bars"][-1]["timestamp"] == day(5)
            assert newest["bars"][-1]["close"] == 12.0
            event = follower.next_event()  # what came before it was heartbeats only
            assert event.id == f"{int(opening.id or 0) + 1}.0", event
            assert (event.bar["timestamp"], event.bar["close"]) == (day(5), 12.0)
            assert set(follower.comments) == {": heartbeat"}, follower.comments
            assert len(follower.comments) >= OUTAGE_SECONDS / 2, "the stream stayed alive"
            time.sleep(1)

    answers = load.answers
    print(
        f"\nPostgreSQL outage {restarting - stopped:.1f} s: first 503 miss "
        f"{detected - stopped:+.2f} s after the stop; first good miss {first_good - up:.2f} s "
        f"after the server was up ({first_good - restarting:.2f} s after start_server began); "
        f"{len(load.of('hit', stopped, restarting))} hits and "
        f"{len(load.of('miss', stopped, restarting))} misses during the outage, slowest 503 "
        f"{max(a.ended - a.started for a in answers if a.status == 503):.2f} s"
    )
    assert_no_5xx_but_503_with_retry_after(answers)
    during = load.of("hit", after=stopping, before=restarting)
    assert len(during) > OUTAGE_SECONDS * 5, "hits were asked all through the outage"
    assert all(a.status == 200 for a in load.of("hit")), "every hit answered 200"
    missed = load.of("miss", after=stopped + 1, before=restarting - 1)
    assert missed and all(a.status == 503 for a in missed), "misses get 503 while it is down"
    since = load.of("miss", after=first_good + 0.5)
    assert since and all(a.status == 200 for a in since), "and 200 once it is back"
    assert load.of("miss", before=stopping) and all(
        a.status == 200 for a in load.of("miss", before=stopping)
    )

    # One story in the log, not a line per poll or per reconnect: no traceback either.
    assert "Traceback" not in log_path.read_text()
    lines = [line for line in outage_log.splitlines() if line.strip()]
    assert len(lines) <= 6, outage_log
    assert sum("cannot be reached" in line for line in lines) == 1, outage_log
    assert sum("reached again" in line for line in lines) == 1, outage_log


IMPORTS = """
import sys
from market_api.app import create_app
app = create_app()
print(" ".join(sorted(m for m in sys.modules if m.split(".")[0] in ("redis", "kombu", "celery"))))
"""


def test_the_api_needs_no_redis(tmp_path: Path) -> None:
    """Only the pipeline's Celery runs use Redis: an API replica in lake mode loads no Redis
    client, so a Redis outage cannot reach it."""
    env = clean_env(
        MARKET_DATA_HOME=str(tmp_path / "home"),
        MARKET_POSTGRES_URL="postgresql://market@127.0.0.1:9/market",  # never connected
        MARKET_SHARED_HOME=str(tmp_path / "shared"),
    )
    done = subprocess.run(
        [sys.executable, "-c", IMPORTS], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == ""
