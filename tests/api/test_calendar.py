"""``GET /calendar`` served by granian: the NYSE sessions with their open and close as New York
date-times, held against exchange_calendars' XNYS."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

import exchange_calendars
import pytest
import requests

from market_core.home import DataHome
from tests.api.conftest import assert_bad_parameter
from tests.served_api import Served, serve

NEW_YORK = ZoneInfo("America/New_York")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The calendar needs no data: a data home before its first load."""
    home = DataHome(tmp_path_factory.mktemp("calendar") / "home")
    home.root.mkdir()
    with serve(home, tmp_path_factory.mktemp("log") / "granian.log") as served:
        yield served


def sessions(server: Served, **params: str) -> list[dict[str, Any]]:
    response = requests.get(f"{server.base}/calendar", params=params, timeout=60)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    found: list[dict[str, Any]] = response.json()["sessions"]
    return found


def by_date(found: list[dict[str, Any]]) -> dict[str, tuple[str, str]]:
    return {s["date"]: (s["open"], s["close"]) for s in found}


def test_early_closes_show_at_13_and_holidays_are_absent(server: Served) -> None:
    days = by_date(sessions(server, start="2024-11-25", end="2024-12-31"))
    assert days["2024-11-29"] == ("2024-11-29T09:30:00-05:00", "2024-11-29T13:00:00-05:00")
    assert days["2024-12-24"] == ("2024-12-24T09:30:00-05:00", "2024-12-24T13:00:00-05:00")
    assert days["2024-11-27"] == ("2024-11-27T09:30:00-05:00", "2024-11-27T16:00:00-05:00")
    assert "2024-11-28" not in days, "Thanksgiving"
    assert "2024-12-25" not in days, "Christmas"
    assert "2024-11-30" not in days and "2024-12-01" not in days, "a weekend"
    july = by_date(sessions(server, start="2024-07-01", end="2024-07-05"))
    assert july["2024-07-03"] == ("2024-07-03T09:30:00-04:00", "2024-07-03T13:00:00-04:00")
    assert "2024-07-04" not in july


def test_the_offset_follows_daylight_saving(server: Served) -> None:
    spring = by_date(sessions(server, start="2024-03-08", end="2024-03-11"))
    assert spring == {
        "2024-03-08": ("2024-03-08T09:30:00-05:00", "2024-03-08T16:00:00-05:00"),
        "2024-03-11": ("2024-03-11T09:30:00-04:00", "2024-03-11T16:00:00-04:00"),
    }
    autumn = by_date(sessions(server, start="2024-11-01", end="2024-11-04"))
    assert autumn == {
        "2024-11-01": ("2024-11-01T09:30:00-04:00", "2024-11-01T16:00:00-04:00"),
        "2024-11-04": ("2024-11-04T09:30:00-05:00", "2024-11-04T16:00:00-05:00"),
    }


def test_every_session_open_and_close_equal_xnys(server: Served) -> None:
    """2000 to the end of next year, in ranges the API allows: the same days, and the same
    instants (XNYS gives them in UTC)."""
    last = dt.date(dt.date.today().year + 1, 12, 31)
    found: list[dict[str, Any]] = []
    for first, stop in ((dt.date(2000, 1, 1), dt.date(2019, 12, 31)),
                        (dt.date(2020, 1, 1), last)):  # fmt: skip
        found += sessions(server, start=first.isoformat(), end=stop.isoformat())
    schedule = exchange_calendars.get_calendar("XNYS", start="2000-01-01", end=last).schedule
    expected = [
        (day.date().isoformat(), row.open.to_pydatetime(), row.close.to_pydatetime())
        for day, row in schedule.loc["2000-01-01" : last.isoformat()].iterrows()  # type: ignore[misc]
    ]
    served = [
        (s["date"], dt.datetime.fromisoformat(s["open"]), dt.datetime.fromisoformat(s["close"]))
        for s in found
    ]
    assert [s[0] for s in served] == [e[0] for e in expected]
    assert served == expected
    assert all(s[1].tzinfo is not None and s[1].astimezone(NEW_YORK).utcoffset() ==
               s[1].utcoffset() for s in served)  # fmt: skip


def test_one_end_left_out_is_a_year_from_the_other(server: Served) -> None:
    after = sessions(server, start="2023-01-01")
    assert after[0]["date"] == "2023-01-03" and after[-1]["date"] == "2023-12-29"
    before = sessions(server, end="2023-12-31")
    assert before[0]["date"] == "2023-01-03" and before[-1]["date"] == "2023-12-29"
    today = dt.datetime.now(NEW_YORK).date()
    default = sessions(server)
    assert dt.date.fromisoformat(default[0]["date"]) >= today
    assert dt.date.fromisoformat(default[-1]["date"]) <= today + dt.timedelta(days=365)
    assert sessions(server, start="2024-11-28", end="2024-11-28") == []


BAD = [
    ("start=2024-13-01", "start"),
    ("start=yesterday", "start"),
    ("end=20240101", "end"),
    ("end=2024-02-30", "end"),
    ("start=2024-03-01&end=2024-02-01", "start"),
    ("start=1969-12-31&end=1970-01-05", "start"),
    ("start=2099-12-01&end=2100-01-01", "end"),
    ("start=1980-01-01&end=2020-01-01", "end"),
    ("start=2024-01-01&start=2024-02-01", "start"),
    ("end=2024-01-01&end=2024-02-01", "end"),
]


@pytest.mark.parametrize(("query", "parameter"), BAD)
def test_every_bad_parameter_is_a_400_naming_it(server: Served, query: str, parameter: str) -> None:
    assert_bad_parameter(requests.get(f"{server.base}/calendar?{query}", timeout=30), parameter)


def test_the_endpoints_are_in_the_openapi_schema(server: Served) -> None:
    schema = requests.get(f"{server.base}/schema/openapi.json", timeout=30).json()
    calendar = schema["paths"]["/calendar"]["get"]
    assert {p["name"] for p in calendar["parameters"]} == {"start", "end"}
    listings = schema["paths"]["/listings"]["get"]
    assert {p["name"] for p in listings["parameters"]} == {
        "status", "exchange", "asset_type", "date", "search", "limit", "page_token", "format"
    }  # fmt: skip
    content = listings["responses"]["200"]["content"]
    assert {"application/json", "text/csv", "application/vnd.apache.arrow.stream",
            "application/vnd.apache.parquet"} <= set(content)  # fmt: skip
    assert {"400", "410"} <= set(listings["responses"])
    listing = schema["components"]["schemas"]["Listing"]
    assert list(listing["properties"])[-1] == "has_bars"
    instrument = schema["components"]["schemas"]["Instrument"]
    assert list(instrument["properties"]) == [
        "symbol", "first_date", "last_date", "bar_count", "name", "exchange", "asset_type",
        "status", "delisting_date", "missing_sessions",
    ]  # fmt: skip
