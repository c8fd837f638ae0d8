"""Page tokens: where the next page of a ``/bars`` query starts, signed so that they cannot be
forged or moved to another query.

A token holds the data version its page was cut from, a digest of the normalized query and the
last bar sent (symbol, timestamp), under an HMAC-SHA256 of the server's key. It is opaque to
clients: its layout may change between releases. The key comes from ``MARKET_API_TOKEN_SECRET``
or, unset, from a file every replica of one installation reads (``signing_key``).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import logging
import os
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import msgspec

from market_api.http.errors import PAGE_TOKEN, InvalidParameter
from market_core.env import SettingsError
from market_core.home import DataHome

log = logging.getLogger(__name__)

KEY_FILE = "api-token-secret"
_LAYOUT = 1
_MAC_BYTES = 16
FORGED = (
    "page_token is not one this API issued (malformed or altered); pass next_page_token exactly "
    "as it came, or leave page_token out to start from the first page"
)
FOREIGN = (
    "page_token belongs to another query: symbols, start, end, interval, adjustment and as_of "
    "must be those of the request that returned it (limit and format may change)"
)


@dataclass(frozen=True, slots=True)
class PageToken:
    version: str | None
    """The data version the first page was read at; every later page reads it too."""
    query: str
    """``BulkQuestion.digest()`` of the query the token continues."""
    after: tuple[str, datetime]
    """The last bar sent: its symbol and its stored (naive exchange-local) timestamp."""


class TokenSigner:
    """Signs and checks page tokens with one key (never logged, never part of an answer)."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def sign(self, token: PageToken) -> str:
        symbol, moment = token.after
        payload = msgspec.json.encode(
            [_LAYOUT, token.version, token.query, symbol, moment.isoformat()]
        )
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def verify(self, text: str, query: str) -> PageToken:
        """The token ``text`` names, if this key signed it for ``query``; else a 400 naming
        ``page_token`` (forged or altered, or another query's)."""
        try:
            payload_part, mac_part = text.split(".")
            payload, mac = _unb64(payload_part), _unb64(mac_part)
        except (ValueError, binascii.Error):
            raise InvalidParameter(PAGE_TOKEN, FORGED) from None
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise InvalidParameter(PAGE_TOKEN, FORGED)
        try:
            layout, version, digest, symbol, moment = msgspec.json.decode(payload)
            if layout != _LAYOUT or not isinstance(symbol, str) or not isinstance(digest, str):
                raise ValueError(layout)
            token = PageToken(version, digest, (symbol, datetime.fromisoformat(moment)))
        except (ValueError, TypeError, msgspec.DecodeError):
            raise InvalidParameter(PAGE_TOKEN, FORGED) from None
        if not hmac.compare_digest(token.query, query):
            raise InvalidParameter(PAGE_TOKEN, FOREIGN)
        return token

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:_MAC_BYTES]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not text.isascii():
        raise ValueError("not base64")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def signing_key(secret: str | None, home: DataHome) -> bytes:
    """The key of ``MARKET_API_TOKEN_SECRET``, else the random one kept in ``KEY_FILE``.

    The file lives in the shared folder when there is one (``MARKET_SHARED_HOME``: every
    replica of the several-machines mode reads the same), else in the data home's state
    folder (the replicas of one machine). The first replica to start writes it, mode 0600;
    replicas that see different folders must set the variable to one value."""
    if secret:
        return hashlib.sha256(secret.encode()).digest()
    places = [home.state_dir] if home.shared is None else [home.shared / "state", home.state_dir]
    for folder in places:
        try:
            return _key_in(folder / KEY_FILE)
        except OSError as exc:
            log.warning("cannot keep the page-token key in %s (%s)", folder, exc.strerror)
    raise SettingsError(
        f"no folder to keep the page-token key in ({', '.join(map(str, places))}); "
        "set MARKET_API_TOKEN_SECRET"
    )


def _key_in(path: Path) -> bytes:
    """The key in ``path``, created if absent: written aside, then linked into place, so two
    replicas starting at once agree on the one that got there first."""
    with contextlib.suppress(FileNotFoundError):
        return _read_key(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(6)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    text = path.read_text(encoding="ascii").strip()
    if len(text) < 32:
        raise OSError(0, f"{path.name} holds no key", str(path))
    return hashlib.sha256(text.encode()).digest()
