"""Schemathesis hooks (``SCHEMATHESIS_HOOKS``): what the OpenAPI schema cannot say by itself.

OpenAPI has no way to relate two parameters, so ``start <= end`` is stated in the parameters'
descriptions and the 400 answer's, and the API answers 400 to a reversed range. Generated ranges
are put in order here, so that ``positive_data_acceptance`` checks every other promise of the
schema. ``start`` and ``end`` are strings in the schema (an ISO date or date-time, which the
description states and ``market_api.bars.params.parse_moment`` reads): a generated string that is
neither becomes a fixed date here, and ``tests/api/test_intraday.py`` tests the refusals.

``as_of`` (time travel) is answered only by the shared lake, and only for times after its oldest
kept snapshot; the API served here is the single-file mode, where the schema's description says
every ``as_of`` is a 400. Neither can be stated in OpenAPI, so the schema under test leaves it
out (``tests/api/test_as_of.py`` and ``tests/cluster/test_lake_api.py`` test it). So is
``page_token``: a valid one only comes from a previous answer (``tests/api/test_bulk_bars.py``).
``/calendar`` answers a bounded range of days; generated ranges are moved inside it here
(``tests/api/test_calendar.py`` tests the refusals).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import schemathesis

from market_api.bars.params import parse_moment
from market_api.http.errors import InvalidParameter
from market_api.universe.calendar import FIRST_DAY, LAST_DAY, MAX_DAYS

_STAND_INS = {"start": "2024-01-02", "end": "2024-12-31"}
"""What a generated ``start`` or ``end`` that is no ISO date or date-time becomes."""


def _moment(name: str, value: str) -> dt.datetime:
    """The value as the API reads it (``parse_moment``), a date as its midnight, so that dates
    and date-times compare."""
    found = parse_moment(name, value)
    assert found is not None
    return found if isinstance(found, dt.datetime) else dt.datetime.combine(found, dt.time())


@schemathesis.hook
def map_query(context: Any, query: dict[str, Any] | None) -> dict[str, Any] | None:
    if not query:
        return query
    query = dict(query)
    moments: dict[str, dt.datetime] = {}
    for name, stand_in in _STAND_INS.items():
        value = query.get(name)
        if not isinstance(value, str) or not value:
            continue
        try:
            moments[name] = _moment(name, value)
        except InvalidParameter:
            query[name] = stand_in  # the schema says "string"; the rule is in its description
            moments[name] = _moment(name, stand_in)
    if len(moments) == 2 and moments["start"] > moments["end"]:
        query["start"], query["end"] = query["end"], query["start"]
    operation = getattr(context, "operation", None)
    if getattr(operation, "path", None) == "/calendar":
        _within_the_calendar(query)
    return query


def _within_the_calendar(query: dict[str, Any]) -> None:
    """``/calendar`` answers the days from ``FIRST_DAY`` to ``LAST_DAY``, at most ``MAX_DAYS``
    at once (its parameters' descriptions say so, OpenAPI cannot): generated dates are moved
    inside, ``end`` brought within reach of ``start``."""
    days: dict[str, dt.date] = {}
    for name in ("start", "end"):
        value = query.get(name)
        if isinstance(value, str) and value:
            try:
                days[name] = min(max(dt.date.fromisoformat(value), FIRST_DAY), LAST_DAY)
            except ValueError:
                continue
    if "start" in days and "end" in days:
        days["end"] = min(days["end"], days["start"] + dt.timedelta(days=MAX_DAYS - 1))
    for name, day in days.items():
        query[name] = day.isoformat()


@schemathesis.hook
def before_load_schema(context: Any, raw_schema: dict[str, Any]) -> None:
    for methods in raw_schema.get("paths", {}).values():
        for operation in methods.values():
            if isinstance(operation, dict) and "parameters" in operation:
                operation["parameters"] = [
                    p
                    for p in operation["parameters"]
                    if p.get("name") not in ("as_of", "page_token")
                ]
