"""The API's knobs, read from the environment once, in one place.

Every knob has a default that works offline, so ``make api`` needs no configuration; each is
listed in the README. A bad value stops the service at start-up with a message naming the
variable, rather than surfacing later as odd cache or hand-off behaviour.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from market_core.env import SettingsError, env_float, env_int
from market_core.home import DataHome

MAX_LIMIT = 100_000
"""The largest ``limit`` a client may ask for: more than any symbol's daily history."""

TOKEN_SECRET_VAR = "MARKET_API_TOKEN_SECRET"
"""The key that signs page tokens; every replica behind one balancer needs the same one."""

HOST_VAR = "MARKET_API_HOST"
AUTH_VAR = "MARKET_API_AUTH"
RATE_LIMIT_VAR = "MARKET_API_RATE_LIMIT"
TLS_CERT_VAR = "MARKET_API_TLS_CERT"
TLS_KEY_VAR = "MARKET_API_TLS_KEY"
CORS_VAR = "MARKET_API_CORS_ORIGINS"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
_WINDOWS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}

AuthMode = Literal["required", "off"]


@dataclass(frozen=True)
class Quota:
    """``MARKET_API_RATE_LIMIT``: at most ``requests`` per window of ``seconds``."""

    requests: int
    seconds: int


@dataclass(frozen=True)
class Settings:
    home: DataHome = field(default_factory=DataHome.from_env)
    cache_entries: int = 10_000
    """Most responses kept in the LRU; 0 turns the cache off."""
    cache_bytes: int = 256 * 1024 * 1024
    """Most bytes (bodies, headers and keys) kept in the LRU."""
    poll_seconds: float = 0.025
    """How often the background thread looks for a loader's write lock and a new data version.

    Both checks are a lock test and a few ``stat`` calls; 25 ms keeps the hand-off well inside
    the writer's first 100 ms backoff step and a new load visible well inside a second."""
    unavailable_wait_seconds: float = 10.0
    """How long a cache miss waits for the DuckDB file while a writer holds it, before a 503."""
    retry_after_seconds: int = 1
    """The ``Retry-After`` a 503 carries: loads hold the file for a few hundred ms per batch."""
    stream_max_clients: int = 2000
    """Most push-stream clients at once (``market_api.stream``); one more gets a 503."""
    stream_heartbeat_seconds: float = 15.0
    """How long a stream stays silent before a comment line tells proxies and the client it
    is alive."""
    stream_queue_commits: int = 64
    """Commits' worth of events a stream client may fall behind by before it is dropped: the
    bound on the memory a client that stopped reading holds."""
    stream_poll_seconds: float = 0.005
    """How often the stream's poller compares the data version (a few ``stat`` calls)."""
    stream_retry_after_seconds: int = 5
    """The ``Retry-After`` of the 503 beyond ``stream_max_clients``."""
    cache_answer_bytes: int = 1024 * 1024
    """The largest answer the LRU keeps; a bigger one is streamed to the client and not kept,
    so no answer is ever whole in memory (``http/fastpath.py``)."""
    batch_rows: int = 131_072
    """Bars per query of a streamed answer (``/bars``, Arrow, Parquet): the memory one answer
    holds at a time, about 8 MB (bench/FINDINGS.md, bulk reads, says why this size)."""
    by_date_min_bars: int = 1_000_000
    """Fewest daily bars for which questions of a few days read a date-ordered copy
    (``bars/by_date.py``); below it a scan of the store is as quick and the copy is not built."""
    by_symbol_min_bars: int = 1_000_000
    """Fewest daily bars for which daily, unadjusted batches read a symbol-ordered copy
    (``bars/by_symbol.py``); below it none is built: a small store is read quickly enough, and
    its server needs no second file per version."""
    token_secret: str | None = field(default=None, repr=False)
    """Signs page tokens (``bars/tokens.py``); unset, a random key kept in the shared folder (or
    the data home) stands in. Never logged."""
    host: str = "127.0.0.1"
    """The address granian binds (``MARKET_API_HOST``, passed by ``make api``); it decides the
    default of ``auth``."""
    workers: int = 1
    """granian's worker processes (``MARKET_API_WORKERS``); each keeps its own cache."""
    auth: AuthMode = "off"
    """``required``: every route but the open ones wants an API key (``market_api.access``)."""
    auth_explicit: bool = False
    """``MARKET_API_AUTH`` was set, rather than derived from ``host``."""
    rate_limit: Quota | None = None
    """Requests per key (or per client address with auth off) per window, per replica."""
    tls_cert: Path | None = None
    tls_key: Path | None = None
    cors_origins: tuple[str, ...] = ()
    """Origins a browser may call the API from (Litestar's CORS config); none by default."""

    @property
    def loopback(self) -> bool:
        return self.host in LOOPBACK_HOSTS

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        base = cls(
            home=DataHome.from_env(),
            cache_entries=env_int(env, "MARKET_API_CACHE_ENTRIES", cls.cache_entries, minimum=0),
            cache_bytes=env_int(env, "MARKET_API_CACHE_BYTES", cls.cache_bytes, minimum=0),
            poll_seconds=env_float(env, "MARKET_API_POLL_SECONDS", cls.poll_seconds, 0.001, 1.0),
            unavailable_wait_seconds=env_float(
                env, "MARKET_API_UNAVAILABLE_WAIT_SECONDS", cls.unavailable_wait_seconds, 0.0, 300.0
            ),
            stream_max_clients=env_int(
                env, "MARKET_API_STREAM_MAX_CLIENTS", cls.stream_max_clients, minimum=0
            ),
            stream_heartbeat_seconds=env_float(
                env,
                "MARKET_API_STREAM_HEARTBEAT_SECONDS",
                cls.stream_heartbeat_seconds,
                0.01,
                3600.0,
            ),
            stream_queue_commits=env_int(
                env, "MARKET_API_STREAM_QUEUE_COMMITS", cls.stream_queue_commits, minimum=1
            ),
            cache_answer_bytes=env_int(
                env, "MARKET_API_CACHE_ANSWER_BYTES", cls.cache_answer_bytes, minimum=0
            ),
            batch_rows=env_int(env, "MARKET_API_BATCH_ROWS", cls.batch_rows, minimum=1),
            by_date_min_bars=env_int(
                env, "MARKET_API_BY_DATE_MIN_BARS", cls.by_date_min_bars, minimum=0
            ),
            by_symbol_min_bars=env_int(
                env, "MARKET_API_BY_SYMBOL_MIN_BARS", cls.by_symbol_min_bars, minimum=0
            ),
            token_secret=_secret(env),
        )
        return _with_serving(base, env)


def _secret(env: Mapping[str, str]) -> str | None:
    """``MARKET_API_TOKEN_SECRET``, at least 16 characters; the message never shows it."""
    secret = env.get(TOKEN_SECRET_VAR, "").strip()
    if secret and len(secret) < 16:
        raise SettingsError(f"{TOKEN_SECRET_VAR} must be at least 16 characters long")
    return secret or None


def _with_serving(settings: Settings, env: Mapping[str, str]) -> Settings:
    """Where and how the API listens: host, workers, auth, rate limit, TLS, CORS."""
    host = env.get(HOST_VAR, "").strip() or Settings.host
    raw_auth = env.get(AUTH_VAR, "").strip().lower()
    if raw_auth not in ("", "required", "off"):
        raise SettingsError(f"{AUTH_VAR} must be 'required' or 'off', got {raw_auth!r}")
    auth = raw_auth or ("off" if host in LOOPBACK_HOSTS else "required")
    cert, key = _path(env, TLS_CERT_VAR), _path(env, TLS_KEY_VAR)
    if (cert is None) != (key is None):
        missing = TLS_KEY_VAR if key is None else TLS_CERT_VAR
        raise SettingsError(f"{missing} must be set too: TLS needs both a certificate and a key")
    origins = tuple(o.strip() for o in env.get(CORS_VAR, "").split(",") if o.strip())
    return replace(
        settings,
        host=host,
        workers=env_int(env, "MARKET_API_WORKERS", Settings.workers, minimum=1),
        auth="required" if auth == "required" else "off",
        auth_explicit=bool(raw_auth),
        rate_limit=parse_quota(env.get(RATE_LIMIT_VAR, "")),
        tls_cert=cert,
        tls_key=key,
        cors_origins=origins,
    )


def parse_quota(raw: str) -> Quota | None:
    """``600/minute`` (or ``/second``, ``/hour``, ``/day``); empty or ``off``: no limit."""
    text = raw.strip().lower().replace("_", "")
    if text in ("", "off"):
        return None
    count, _, unit = text.partition("/")
    window = _WINDOWS.get(unit.strip().removesuffix("s"))
    if not count.strip().isdigit() or int(count) < 1 or window is None:
        raise SettingsError(
            f"{RATE_LIMIT_VAR} must look like 600/minute (a whole number of at least 1, then "
            f"/second, /minute, /hour or /day), got {raw.strip()!r}"
        )
    return Quota(int(count), window)


def _path(env: Mapping[str, str], name: str) -> Path | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    path = Path(raw).expanduser()
    if not path.is_file():
        raise SettingsError(f"{name} names no readable file: {raw}")
    return path
