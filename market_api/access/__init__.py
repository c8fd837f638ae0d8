"""Who may call the API, and how often: API keys, per-key rate limits, CORS (docs/serving.md)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from litestar.config.cors import CORSConfig

from market_api.access.cors import CorsHeaders, cors_config
from market_api.access.gate import Gate
from market_api.access.limits import FixedWindow
from market_api.access.ring import KeyRing
from market_api.access.stores import open_key_store
from market_api.settings import AUTH_VAR, HOST_VAR, Settings
from market_core.env import SettingsError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Access:
    """What ``create_app`` wires: the guard (None when nothing is asked of callers), the CORS
    config Litestar answers preflights with, and the key ring to start and stop."""

    gate: Gate | None
    cors: CORSConfig | None
    ring: KeyRing | None

    async def start(self) -> None:
        if self.ring is not None:
            self.ring.start()

    async def stop(self) -> None:
        if self.ring is not None:
            self.ring.stop()


def access_for(settings: Settings) -> Access:
    """Refuses (``SettingsError``) to serve beyond loopback with auth off unless
    ``MARKET_API_AUTH=off`` was set, and warns when it was."""
    if settings.auth == "off" and not settings.loopback:
        if not settings.auth_explicit:
            raise SettingsError(
                f"{HOST_VAR}={settings.host} listens beyond loopback with no API keys asked; "
                f"set {AUTH_VAR}=required (the default there), or {AUTH_VAR}=off to serve "
                "anyone who can reach it"
            )
        log.warning(
            "%s=off: the API on %s answers anyone who can reach it, without a key",
            AUTH_VAR,
            settings.host,
        )
    ring = KeyRing(open_key_store(settings.home)) if settings.auth == "required" else None
    limit = None if settings.rate_limit is None else FixedWindow(settings.rate_limit)
    config = cors_config(settings.cors_origins)
    cors = None if config is None else CorsHeaders(config)
    if ring is None and limit is None and cors is None:
        return Access(None, None, None)
    return Access(Gate(ring, limit, cors), config, ring)
