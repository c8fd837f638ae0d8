"""Schemathesis hooks (``SCHEMATHESIS_HOOKS``): what the OpenAPI schema cannot say by itself.

OpenAPI has no way to relate two parameters, so ``start <= end`` is stated in the parameters'
descriptions and the 400 answer's, and the API answers 400 to a reversed range. Generated ranges
are put in order here, so that ``positive_data_acceptance`` checks every other promise of the
schema. Values that are not both dates (negative cases) are left alone.

``as_of`` (time travel) is answered only by the shared lake, and only for times after its oldest
kept snapshot; the API served here is the single-file mode, where the schema's description says
every ``as_of`` is a 400. Neither can be stated in OpenAPI, so the schema under test leaves it
out (``tests/api/test_as_of.py`` and ``tests/cluster/test_lake_api.py`` test it).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import schemathesis


def _date(value: Any) -> dt.date | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        return None


@schemathesis.hook
def map_query(context: Any, query: dict[str, Any] | None) -> dict[str, Any] | None:
    if not query:
        return query
    start, end = _date(query.get("start")), _date(query.get("end"))
    if start is not None and end is not None and start > end:
        return {**query, "start": query["end"], "end": query["start"]}
    return query


@schemathesis.hook
def before_load_schema(context: Any, raw_schema: dict[str, Any]) -> None:
    for methods in raw_schema.get("paths", {}).values():
        for operation in methods.values():
            if isinstance(operation, dict) and "parameters" in operation:
                operation["parameters"] = [
                    p for p in operation["parameters"] if p.get("name") != "as_of"
                ]
