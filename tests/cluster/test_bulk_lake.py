"""``GET /bars`` on the shared lake: a page token pins the snapshot its first page was read at,
so the pages of one query stay one snapshot while loads commit, on whichever replica serves
them. Two real replicas (``make api``) on separate data homes share the lake and the shared
folder, where the page-token key lives.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import date
from typing import Any
from urllib.parse import quote

import pyarrow as pa
import pytest

from tests.cluster.services import PostgresService
from tests.cluster.test_lake_api import (
    Lake,
    get,
    make_bars,
    new_lake,
    wait_until,
)
from tests.served_api import Served, serve

AAPL = make_bars("AAPL", date(2024, 1, 2), 60, 180.0)
MSFT = make_bars("MSFT", date(2024, 1, 2), 40, 370.0)
NVDA = make_bars("NVDA", date(2024, 1, 2), 30, 480.0)
QUERY = "symbols=NVDA,AAPL,MSFT,ZZZ&adjustment=split"
MAX_PAGES = 200


@dataclass(frozen=True)
class Replicas:
    lake: Lake
    a: Served
    b: Served


@pytest.fixture
def replicas(
    postgres: PostgresService, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Replicas]:
    root = tmp_path_factory.mktemp("bulk-lake")
    lake = new_lake(postgres, root)
    lake.commit(AAPL + MSFT + NVDA, [("AAPL", "2024-02-01", 4.0)])
    with ExitStack() as stack:
        a, b = (
            stack.enter_context(serve(lake.machine(name), root / f"{name}.log", **lake.env()))
            for name in ("api-a", "api-b")
        )
        yield Replicas(lake, a, b)


def rows_of(page: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [(symbol, *bar.values()) for symbol, bars in page["bars"].items() for bar in bars]


def version_of(served: Served) -> str:
    version: str = get(served, "/health").json()["data_version"]
    return version


def test_pages_stay_on_their_snapshot_while_loads_commit(replicas: Replicas) -> None:
    a, b, lake = replicas.a, replicas.b, replicas.lake
    whole = get(a, f"/bars?{QUERY}&limit=1000000").json()
    expected = rows_of(whole)
    assert whole["missing_symbols"] == ["ZZZ"]
    assert len(expected) == 130
    first = get(a, f"/bars?{QUERY}&limit=25").json()
    rows, token = rows_of(first), first["next_page_token"]
    old = version_of(a)

    # A load revises bars on both sides of the first page's end, adds bars and a split.
    changed = (AAPL[3], AAPL[40], MSFT[5], NVDA[0])
    revised = [(*bar[:5], bar[5] + 10.0, *bar[6:]) for bar in changed]
    added = make_bars("NVDA", date(2024, 1, 2), 31, 480.0)[-1]
    new = lake.commit([*revised, added], [("MSFT", "2024-01-20", 2.0)])
    for served in (a, b):
        wait_until(
            lambda s=served: version_of(s) == str(new),  # type: ignore[misc]
            f"{served.base} sees the commit",
        )

    for pages in range(MAX_PAGES):  # the rest, alternating replicas: each reads the pinned one
        served = (b, a)[pages % 2]
        answer = get(served, f"/bars?{QUERY}&limit=25&page_token={quote(token)}")
        assert answer.status_code == 200, answer.text
        page = answer.json()
        assert page["missing_symbols"] == ["ZZZ"]
        rows += rows_of(page)
        token = page["next_page_token"]
        if token is None:
            break
    assert rows == expected
    # A new first page reads the new snapshot: the load did land.
    now = rows_of(get(b, f"/bars?{QUERY}&limit=1000000").json())
    assert len(now) == 131 and now != expected
    assert old != str(new)


def test_a_token_read_at_an_older_snapshot_answers_as_then_in_every_format(
    replicas: Replicas,
) -> None:
    a, b, lake = replicas.a, replicas.b, replicas.lake
    before = get(a, f"/bars?{QUERY}&limit=1000000").json()
    first = get(a, f"/bars?{QUERY}&limit=50").json()
    token = first["next_page_token"]
    new = lake.commit([(*AAPL[55][:5], 1.0, *AAPL[55][6:])])
    wait_until(lambda: version_of(b) == str(new), "replica b sees the commit")
    tail = f"/bars?{QUERY}&limit=1000000&page_token={quote(token)}"
    json_rows = rows_of(get(b, tail).json())
    assert rows_of(first) + json_rows == rows_of(before)
    arrow = get(b, f"{tail}&format=arrow")
    assert arrow.headers["missing-symbols"] == "ZZZ"
    table = pa.ipc.open_stream(arrow.content).read_all()
    as_rows = [tuple(v.isoformat() if hasattr(v, "isoformat") else v for v in row.values())
               for row in table.to_pylist()]  # fmt: skip
    assert as_rows == json_rows
    # The answer to a token is fixed by the token: both replicas tag it alike.
    tagged = get(a, f"{tail}&format=arrow", **{"If-None-Match": arrow.headers["etag"]})
    assert tagged.status_code == 304
