"""The Dagster resources: thin wrappers that read each knob once and build the plain objects
(the Alpha Vantage client, the file or lake store) that the runners are given.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, ClassVar

from dagster import ConfigurableResource, EnvVar, InitResourceContext
from dagster_duckdb import DuckDBResource
from pydantic import Field, PrivateAttr, ValidationInfo, field_validator

from market_core.home import DataHome
from market_core.lake import POSTGRES_URL_VAR, SHARED_HOME_VAR, LakeSettings
from market_core.schema import INTRADAY_INTERVALS
from market_pipeline.defs.partitions import WatchlistResource
from market_pipeline.defs.settings import env_fields, is_unresolved, stripped_or
from market_pipeline.source.client import (
    DEFAULT_BASE_URL,
    INTRADAY_OFF,
    AlphaVantageClient,
    IntradayRefusal,
    KeyFacts,
    key_facts,
)
from market_pipeline.source.rate_limit import calls_available, postgres_url_from_env
from market_pipeline.source.wire import OUTPUTSIZES
from market_pipeline.store.duckdb_file import DuckDBFileStore
from market_pipeline.store.lake import LakeStore


class AlphaVantageResource(ConfigurableResource):
    """The source's knobs, each declared here once, for the fetch, the schedule and the sensor.

    ``from_env`` sets a field from its variable only when that variable is set (``ENV``); the
    key stays an ``EnvVar``, so the UI shows its variable's name, never the key.
    """

    ENV: ClassVar[dict[str, str]] = {
        "api_key": "ALPHAVANTAGE_API_KEY",
        "base_url": "ALPHAVANTAGE_BASE_URL",
        "requests_per_second": "ALPHAVANTAGE_REQUESTS_PER_SECOND",
        "requests_per_minute": "ALPHAVANTAGE_REQUESTS_PER_MINUTE",
        "requests_per_day": "ALPHAVANTAGE_REQUESTS_PER_DAY",
        "outputsize": "ALPHAVANTAGE_OUTPUTSIZE",
        "intraday_interval": "ALPHAVANTAGE_INTRADAY_INTERVAL",
        "intraday_extended": "ALPHAVANTAGE_INTRADAY_EXTENDED",
    }

    data_home: str = Field(description="MARKET_DATA_HOME: the rate limiter's state lives here.")
    api_key: str | None = Field(
        default=None, description="ALPHAVANTAGE_API_KEY; unset = the bundled offline sample."
    )
    base_url: str = Field(default=DEFAULT_BASE_URL, description="ALPHAVANTAGE_BASE_URL")
    requests_per_second: int = Field(
        default=1, description="ALPHAVANTAGE_REQUESTS_PER_SECOND; 0 = no limit at that scale."
    )
    requests_per_minute: int = Field(
        default=5, description="ALPHAVANTAGE_REQUESTS_PER_MINUTE; 0 = no limit at that scale."
    )
    requests_per_day: int = Field(
        default=25,
        description="ALPHAVANTAGE_REQUESTS_PER_DAY; 0 = no daily quota (premium keys). The "
        "daily update plans its symbols with this value, the fetch obeys it.",
    )
    outputsize: str = Field(
        default="auto",
        description="ALPHAVANTAGE_OUTPUTSIZE: compact (latest 100 bars), full, or auto.",
    )
    intraday_interval: str = Field(
        default=INTRADAY_OFF,
        description="ALPHAVANTAGE_INTRADAY_INTERVAL: off, 1min, 5min, 15min, 30min or 60min. "
        "Not off: the intraday sensor fetches TIME_SERIES_INTRADAY (a premium endpoint) for "
        "every watchlist symbol once per interval during the NYSE session.",
    )
    intraday_extended: str = Field(
        default="false",
        description="ALPHAVANTAGE_INTRADAY_EXTENDED: true = bars of the extended hours too "
        "(04:00-20:00 New York), false = the regular session (09:30-16:00).",
    )
    timeout_seconds: float = 30.0
    """The longest wait for the connection or for any bytes of an answer."""
    deadline_seconds: float = 120.0
    """The longest one call may take, connect to last byte (a retry starts a new call)."""
    max_attempts: int = 6
    backoff_seconds: float = 1.0

    _client: AlphaVantageClient | None = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _home: DataHome = PrivateAttr()

    def model_post_init(self, context: Any) -> None:
        """The data home, resolved once per built resource (each process builds its own)."""
        super().model_post_init(context)
        self._home = DataHome.from_env(Path(self.data_home))

    @classmethod
    def from_env(cls, data_home: str, **overrides: Any) -> AlphaVantageResource:
        return cls(**{"data_home": data_home, **env_fields(cls, cls.ENV), **overrides})

    @field_validator("api_key", mode="before")
    @classmethod
    def _api_key(cls, value: object) -> object:
        return stripped_or(value, None)

    @field_validator("base_url", mode="before")
    @classmethod
    def _base_url(cls, value: object) -> object:
        return stripped_or(value, DEFAULT_BASE_URL)

    @field_validator("outputsize", mode="before")
    @classmethod
    def _outputsize(cls, value: object) -> object:
        if not isinstance(value, str) or is_unresolved(value):
            return value
        size = value.strip().lower() or "auto"
        if size not in OUTPUTSIZES:
            raise ValueError(
                f"ALPHAVANTAGE_OUTPUTSIZE (outputsize) must be compact, full or auto, got {value!r}"
            )
        return size

    @field_validator("intraday_interval", mode="before")
    @classmethod
    def _intraday_interval(cls, value: object) -> object:
        if not isinstance(value, str) or is_unresolved(value):
            return value
        interval = value.strip().lower() or INTRADAY_OFF
        if interval not in (INTRADAY_OFF, *INTRADAY_INTERVALS):
            raise ValueError(
                "ALPHAVANTAGE_INTRADAY_INTERVAL (intraday_interval) must be off, "
                f"{', '.join(INTRADAY_INTERVALS)}, got {value!r}"
            )
        return interval

    @field_validator("intraday_extended", mode="before")
    @classmethod
    def _intraday_extended(cls, value: object) -> object:
        if isinstance(value, bool):
            return "true" if value else "false"
        if not isinstance(value, str) or is_unresolved(value):
            return value
        text = value.strip().lower() or "false"
        if text not in ("true", "false"):
            raise ValueError(
                f"ALPHAVANTAGE_INTRADAY_EXTENDED (intraday_extended) must be true or false, "
                f"got {value!r}"
            )
        return text

    @field_validator("requests_per_second", "requests_per_minute", "requests_per_day")
    @classmethod
    def _limit(cls, value: int, info: ValidationInfo) -> int:
        if value < 0:
            name = info.field_name or ""
            raise ValueError(
                f"{cls.ENV.get(name, name)} ({name}) must be 0 (no limit) or more, got {value}"
            )
        return value

    @property
    def home(self) -> DataHome:
        return self._home

    @property
    def uses_sample(self) -> bool:
        return not self.api_key

    @property
    def intraday_on(self) -> bool:
        return self.intraday_interval != INTRADAY_OFF

    @property
    def extended_hours(self) -> bool:
        return self.intraday_extended == "true"

    def key_facts(self) -> KeyFacts | None:
        """The key's remembered facts (``None`` for the offline sample), read without opening
        a client: the sensor asks every minute and must not open the limiter's store."""
        return key_facts(self.home, self.api_key) if self.api_key else None

    def intraday_refusal(self) -> IntradayRefusal | None:
        facts = self.key_facts()
        return facts.intraday_refused() if facts is not None else None

    def calls_left_today(self) -> int | None:
        """The calls a run started now can make, or ``None`` when there is no daily quota.

        Reads the same limits the fetch obeys, so the schedule's quota plan and the run agree.
        """
        if not self.api_key:
            return None
        return calls_available(
            self.home.state_dir,
            self.api_key,
            per_second=self.requests_per_second,
            per_minute=self.requests_per_minute,
            per_day=self.requests_per_day,
            postgres_url=postgres_url_from_env(),
        )

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        """Close the client a step made: a Celery worker runs many steps in one process, and
        each client's limiter holds PostgreSQL connections in the multi-machine mode."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def client(self) -> AlphaVantageClient:
        with self._lock:
            if self._client is None:
                self._client = AlphaVantageClient(
                    home=self.home,
                    api_key=self.api_key or None,
                    base_url=self.base_url,
                    requests_per_second=self.requests_per_second,
                    requests_per_minute=self.requests_per_minute,
                    requests_per_day=self.requests_per_day,
                    timeout_seconds=self.timeout_seconds,
                    deadline_seconds=self.deadline_seconds,
                    max_attempts=self.max_attempts,
                    backoff_seconds=self.backoff_seconds,
                    limiter_postgres_url=postgres_url_from_env(),
                )
            return self._client


class MarketDuckDB(DuckDBResource):
    """The data home's DuckDB file through dagster-duckdb: ``store()`` is the file store that
    writes it with this resource's connections."""

    _home: DataHome = PrivateAttr()

    def model_post_init(self, context: Any) -> None:
        """The data home, resolved once per built resource: the shared folder comes from the
        environment of the process running the step."""
        super().model_post_init(context)
        self._home = DataHome.from_env(Path(self.database).parent)

    @property
    def home(self) -> DataHome:
        return self._home

    def store(self) -> DuckDBFileStore:
        return DuckDBFileStore(self.database, home=self._home, connect=self.get_connection)


class MarketLake(ConfigurableResource):
    """The shared lake: ``store()`` is the lake store. ``postgres_url`` and ``shared_home`` come
    through ``EnvVar``s, so that the Dagster UI shows the variables' names, never a password."""

    postgres_url: str
    shared_home: str
    data_home: str
    """This machine's data home: the DuckDB extensions are installed below it."""

    def store(self) -> LakeStore:
        return LakeStore(self.postgres_url, self.shared_home, self.data_home)

    @property
    def home(self) -> DataHome:
        return self.store().home

    @property
    def database(self) -> str:
        return self.store().database


def store_from_env(home: DataHome) -> MarketDuckDB | MarketLake:
    """The ``duckdb`` resource: the lake when ``MARKET_POSTGRES_URL`` is set, else the data
    home's DuckDB file."""
    if LakeSettings.from_env() is None:
        return MarketDuckDB(database=str(home.duckdb_path))
    return MarketLake(
        postgres_url=EnvVar(POSTGRES_URL_VAR),
        shared_home=EnvVar(SHARED_HOME_VAR),
        data_home=str(home.root),
    )


def resources_from_env(**alpha_vantage: Any) -> dict[str, ConfigurableResource]:
    """The resources every op, schedule and sensor of the location gets, from the environment.

    The data home is read once and handed to both resources that need it as an absolute path.
    ``alpha_vantage`` sets other fields of that resource (tests shorten its backoff and timeouts).
    """
    home = DataHome.from_env()
    return {
        "alpha_vantage": AlphaVantageResource.from_env(str(home.root), **alpha_vantage),
        "duckdb": store_from_env(home),
        "watchlist": WatchlistResource.from_env(),
    }
