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
