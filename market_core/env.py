"""Reading numbers from environment variables, for both services' settings.

A bad value stops a service at start-up with a message naming the variable, rather than
surfacing later as odd behaviour; an empty or unset variable means the default.
"""

from __future__ import annotations

from collections.abc import Mapping


class SettingsError(ValueError):
    """An environment variable holds a value the service cannot use."""


def env_int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    """A whole number of at least ``minimum``; ``_`` separators allowed (``268_435_456``)."""
    raw = env.get(name, "").strip().replace("_", "")
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return value


def env_float(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if not low <= value <= high:
        raise SettingsError(f"{name} must be between {low} and {high}, got {value}")
    return value
