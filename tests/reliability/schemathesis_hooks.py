"""Schemathesis hooks (``SCHEMATHESIS_HOOKS``): what the OpenAPI schema cannot say by itself.

OpenAPI has no way to relate two parameters, so ``start <= end`` is stated in the parameters'
descriptions and the 400 answer's, and the API answers 400 to a reversed range. Generated ranges
are put in order here, so that ``positive_data_acceptance`` checks every other promise of the
schema. Values that are not both dates (negative cases) are left alone.
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
