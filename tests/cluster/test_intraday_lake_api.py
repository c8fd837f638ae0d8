"""Intraday bars from the shared lake: a replica (``make api``) serves them once committed,
pinned to a snapshot like the daily bars, and a snapshot without the new tables (a lake made
before intraday bars and the change log) answers empty series, not errors.

The commits come from processes of their own writing through ``market_core.lake.connect`` and
plain SQL, as in ``test_lake_api.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from tests.cluster.services import PostgresService
from tests.cluster.test_lake_api import Lake, get, make_bars, new_lake, wait_until
from tests.reliability.processes import REPO, clean_env
from tests.served_api import Served, serve

Minute = tuple[str, str, str, float, float, float, float, int]
"""timestamp (ISO, naive New York), symbol, interval, open, high, low, close, volume."""

WRITER = """
import json, sys
from market_core.lake import LakeSettings, connect, snapshot_id
from market_core.schema import CREATE_INTRADAY_SQL
statements = json.loads(sys.argv[1])
conn = connect(LakeSettings.from_env())
conn.begin()
for sql, rows in statements:
    sql = sql.replace("{create_intraday}", CREATE_INTRADAY_SQL.replace(
        ",\\n    UNIQUE (symbol, interval, timestamp)", ""))
    if rows:
        conn.executemany(sql, rows)
    else:
        conn.execute(sql)
conn.commit()
print(snapshot_id(conn))
"""

SPLIT_DAY = "2024-01-04"
AAPL = make_bars("AAPL", date(2024, 1, 2), 5, 180.0)
DROP = [
    ("DROP TABLE IF EXISTS ohlcv_intraday", None),
    ("DROP TABLE IF EXISTS bar_changes", None),
    ("DROP TABLE IF EXISTS bar_commits", None),
]


def minutes(day: str, count: int, base: float) -> list[Minute]:
    first = datetime.fromisoformat(f"{day}T09:30:00")
    return [
        ((first + timedelta(minutes=i)).isoformat(), "AAPL", "1min", base + i,
         base + i + 0.5, base + i - 0.5, base + i + 0.25, 100 + i)
        for i in range(count)
    ]  # fmt: skip


MINUTES = minutes("2024-01-03", 3, 180.0) + minutes(SPLIT_DAY, 2, 45.0)


def run_sql(lake: Lake, statements: list[tuple[str, list[Any] | None]]) -> int:
    """``statements`` in one transaction, from a process of its own; the snapshot committed."""
    home = lake.machine("writer")
    done = subprocess.run(
        [sys.executable, "-c", WRITER, json.dumps(statements)],
        cwd=REPO, env=clean_env(MARKET_DATA_HOME=str(home.root), **lake.env()),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return int(done.stdout.split()[-1])


def serves_version(served: Served, version: int) -> bool:
    return bool(get(served, "/health").json()["data_version"] == str(version))


def as_json(row: Minute) -> dict[str, Any]:
    ts, _, _, open_, high, low, close, volume = row
    return {"timestamp": f"{ts}-05:00", "open": open_, "high": high, "low": low,
            "close": close, "volume": volume}  # fmt: skip


def test_intraday_bars_from_the_lake_and_a_snapshot_without_the_tables(
    postgres: PostgresService, tmp_path: Path
) -> None:
    lake = new_lake(postgres, tmp_path)
    lake.commit(AAPL, [("AAPL", SPLIT_DAY, 4.0)])
    path = "/instruments/AAPL/ohlcv?interval=1min"
    with serve(lake.machine("api"), tmp_path / "api.log", **lake.env()) as api:
        # A lake from before intraday bars and the change log: the tables are not there.
        old = run_sql(lake, DROP)
        wait_until(lambda: serves_version(api, old), "the replica serves the snapshot")
        empty = get(api, path)
        assert empty.status_code == 200, empty.text
        assert empty.json()["bars"] == []
        assert get(api, path + "&adjustment=all").json()["bars"] == []
        assert get(api, "/instruments/ZZZZ/ohlcv?interval=1min").status_code == 404
        assert len(get(api, "/instruments/AAPL/ohlcv").json()["bars"]) == 5

        insert = "INSERT INTO ohlcv_intraday VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        new = run_sql(lake, [("{create_intraday}", None), (insert, MINUTES)])
        wait_until(lambda: get(api, path).json()["bars"] != [], "the replica serves the bars")
        assert serves_version(api, new)
        assert get(api, path).json()["bars"] == [as_json(row) for row in MINUTES]
        window = get(api, path + "&start=2024-01-03T09:31&end=2024-01-04T09:30").json()["bars"]
        assert [bar["timestamp"][:16] for bar in window] == [
            "2024-01-03T09:31", "2024-01-03T09:32", "2024-01-04T09:30"]  # fmt: skip
        adjusted = get(api, path + "&adjustment=split").json()["bars"]
        assert [bar["close"] for bar in adjusted] == [
            *(row[6] / 4 for row in MINUTES[:3]), *(row[6] for row in MINUTES[3:])]  # fmt: skip
        assert [bar["volume"] for bar in adjusted[:3]] == [row[7] * 4 for row in MINUTES[:3]]

        # Time travel: before the table existed, an empty series; after, the bars.
        for version, count in ((old, 0), (new, len(MINUTES))):
            moment = quote(lake.snapshot_time(version).isoformat(), safe="")
            answer = get(api, f"{path}&as_of={moment}")
            assert answer.status_code == 200, answer.text
            assert len(answer.json()["bars"]) == count
        assert requests.get(f"{api.base}/health", timeout=30).status_code == 200
