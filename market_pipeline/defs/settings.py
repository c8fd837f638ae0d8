"""Which environment variable feeds which resource field, and how a bad value is reported.

The resources (``AlphaVantageResource``, ``WatchlistResource``) are the one place each knob is
declared, with its default and its check; the op, the schedule and the sensors all read them, so
a value changed in the launchpad means the same to each. A variable that is set becomes an
``EnvVar`` on its field: Dagster reads it where the resource is used, and the UI shows the
variable's name, never its value (the key). A variable that is unset or blank leaves the field's
default, because an ``EnvVar`` of an unset variable fails at resolution and, with nothing set,
everything must still work offline.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from dagster import DagsterInvalidConfigError, EnvVar
from pydantic import BaseModel, ValidationError

from market_core.schema import LISTING_ASSET_TYPES, LISTING_STATUSES
from market_pipeline.listings.universe import EXCHANGES, Universe


def env_fields(
    model: type[BaseModel], variables: Mapping[str, str], env: Mapping[str, str] = os.environ
) -> dict[str, Any]:
    """``EnvVar`` (``EnvVar.int`` for whole-number fields) for each field whose variable is set."""
    fields: dict[str, Any] = {}
    for field, name in variables.items():
        if env.get(name, "").strip():
            whole = model.model_fields[field].annotation is int
            fields[field] = EnvVar.int(name) if whole else EnvVar(name)
    return fields


def is_unresolved(value: object) -> bool:
    """An ``EnvVar`` not read yet: a field's check runs again on the value Dagster resolves.

    (Whole-number fields need no such care: an unread ``EnvVar.int`` reaches checks as 0.)
    """
    return isinstance(value, EnvVar)


def stripped_or(value: object, default: object) -> object:
    """A field's text stripped, or ``default`` when blank; an unread ``EnvVar`` passes as is."""
    if isinstance(value, str) and not is_unresolved(value):
        return value.strip() or default
    return value


def configuration_problems(exc: BaseException) -> list[str] | None:
    """The user-facing lines of a resource that failed to resolve, or ``None`` if it is not that.

    Dagster wraps a field check's ``ValueError`` (our messages name the variable) in its own
    errors, and reports an ``EnvVar.int`` that is not a number with the variable's name among a
    stack trace: only those sentences are kept.
    """
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ValidationError):
            return [_field_problem(error) for error in seen.errors()]
        if isinstance(seen, DagsterInvalidConfigError):
            return [_sentence(error.message) for error in seen.errors]
        seen = seen.__cause__ or seen.__context__
    return None


def _field_problem(error: Any) -> str:
    """A field check's own message (it names the variable), else pydantic's with the field."""
    raised = error.get("ctx", {}).get("error")
    return str(raised) if raised is not None else f"{error['loc'][0]}: {error['msg']}"


def _sentence(message: str) -> str:
    """``...PostProcessingError: Value stored in env variable "X" cannot be ...`` -> the rest."""
    for line in message.splitlines():
        if "Error: " in line and "env variable" in line:
            return line.split("Error: ", 1)[1].strip()
    return message.split("\n\n", 1)[0].strip()


UNIVERSE_VAR = "MARKET_UNIVERSE"
UNIVERSE_SYNTAX = (
    "key=value[,value...] parts joined by ';', keys exchange ("
    + ", ".join(EXCHANGES)
    + "), asset_type ("
    + ", ".join(LISTING_ASSET_TYPES)
    + ") and status (active, delisted or all), e.g. exchange=NYSE,NASDAQ;asset_type=Stock;"
    "status=active"
)


def parse_universe(text: str) -> Universe | None:
    """``MARKET_UNIVERSE`` as a ``Universe`` (``None`` when blank), or a ``ValueError`` that
    names the variable, the part at fault and the syntax.

    Keys and values are case-insensitive; a key left out selects every value (status: active).
    """
    if not text.strip():
        return None
    chosen: dict[str, frozenset[str]] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        key, _, values = (s.strip() for s in part.partition("="))
        key = key.lower()
        if not _:
            raise _universe_error(text, f"{part!r} is not key=value")
        if key not in _UNIVERSE_KEYS:
            raise _universe_error(text, f"unknown key {key!r}")
        if key in chosen:
            raise _universe_error(text, f"{key} is given twice")
        words = [" ".join(v.split()) for v in values.split(",")]
        if not all(words):
            raise _universe_error(text, f"{key} has an empty value")
        known = _UNIVERSE_KEYS[key]
        unknown = [w for w in words if w.lower() not in known]
        if unknown:
            raise _universe_error(
                text,
                f"{key} does not know {', '.join(map(repr, unknown))} ({'/'.join(known.values())})",
            )
        chosen[key] = frozenset(known[w.lower()] for w in words)
    if not chosen:
        raise _universe_error(text, "no key=value part")
    statuses = chosen.get("status", frozenset({"active"}))
    if "all" in statuses:
        statuses = frozenset(LISTING_STATUSES)
    return Universe(
        chosen.get("exchange", frozenset()), chosen.get("asset_type", frozenset()), statuses
    )


_UNIVERSE_KEYS: dict[str, dict[str, str]] = {
    "exchange": {e.lower(): e for e in EXCHANGES},
    "asset_type": {a.lower(): a for a in LISTING_ASSET_TYPES},
    "status": {s: s for s in (*LISTING_STATUSES, "all")},
}
"""Each key's accepted words (lower-case) and the value they stand for."""


def _universe_error(text: str, problem: str) -> ValueError:
    return ValueError(
        f"{UNIVERSE_VAR} (universe): {problem}; got {text!r}. The syntax: {UNIVERSE_SYNTAX}"
    )
