"""API keys: made here, kept only as SHA-256 hashes, found by a short public prefix.

A key reads ``mk_<lookup>_<secret>``: ``lookup`` (8 hex characters) finds its row and may be
shown, the secret is 192 random bits. Stores hold ``lookup``, the key's SHA-256 and the facts
``make api-keys`` lists; never the key. docs/serving.md says where each mode keeps them.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

PREFIX = "mk_"
SECRET_BYTES = 24
"""192 bits of randomness: ``secrets.token_urlsafe`` makes 32 characters of them."""
TABLE = "api_keys"
_KEY = re.compile(r"mk_([0-9a-f]{8})_[A-Za-z0-9_-]{32}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


class AccessError(Exception):
    """Base of what ``make api-key*`` reports in one line."""


class BadKeyName(AccessError):
    pass


class KeyNameTaken(AccessError):
    pass


class KeyStoreUnavailable(AccessError):
    """The store cannot be read or written now (its PostgreSQL is down, its file unreadable)."""


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """What ``make api-keys`` shows of a key: never the key, nor its hash."""

    name: str
    lookup: str
    created_at: datetime
    last_used_at: datetime | None


@dataclass(frozen=True, slots=True)
class ActiveKey:
    name: str
    lookup: str
    digest: bytes
    """SHA-256 of the whole key."""


def new_key() -> tuple[str, str]:
    """A fresh key and its lookup prefix."""
    lookup = secrets.token_hex(4)
    return f"{PREFIX}{lookup}_{secrets.token_urlsafe(SECRET_BYTES)}", lookup


def lookup_of(key: str) -> str | None:
    """The key's public prefix, or None if ``key`` is not shaped as this API's keys are."""
    found = _KEY.fullmatch(key)
    return found.group(1) if found else None


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise BadKeyName(
            f"key name {name!r} must be 1 to 64 letters, digits or . _ @ -, starting with a "
            "letter or digit"
        )
    return name
