"""``create_app()``: the granian factory (``market_api.app:create_app``), wiring only."""

from __future__ import annotations

import functools
import gc

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide

from market_api.bars.routes import BarsController, HealthController, InstrumentController
from market_api.bars.service import MarketService
from market_api.http.docs import openapi_config
from market_api.http.errors import EXCEPTION_HANDLERS
from market_api.http.fastpath import CacheFirst
from market_api.readers import open_reader
from market_api.settings import Settings
from market_api.stream.hub import StreamHub
from market_api.stream.routes import StreamController


def create_app(settings: Settings | None = None) -> CacheFirst:
    """The API of one data home (from the environment unless ``settings`` is given): the
    Litestar app (``.app``, its ``state["service"]`` the ``MarketService``) behind the fast
    path that answers cached requests first."""
    settings = settings or Settings.from_env()
    service = MarketService(settings, open_reader(settings))
    hub = StreamHub(service.reader, service.factors, settings)

    def provide_service() -> MarketService:
        return service

    def provide_hub() -> StreamHub:
        return hub

    app = Litestar(
        route_handlers=[HealthController, InstrumentController, BarsController, StreamController],
        dependencies={
            "service": Provide(provide_service, sync_to_thread=False),
            "hub": Provide(provide_hub, sync_to_thread=False),
        },
        exception_handlers=EXCEPTION_HANDLERS,
        on_startup=[service.start, hub.start, freeze_startup_heap],
        on_shutdown=[hub.stop, service.stop],
        openapi_config=openapi_config(
            title="market-data API",
            version="1.0.0",
            description=(
                "Daily OHLCV bars loaded by the market pipeline, served from DuckDB, as JSON, "
                "CSV, Arrow or Parquet. Every GET also answers HEAD: the same status and "
                "headers, no body."
            ),
        ),
        state=State({"service": service, "hub": hub}),
    )
    return CacheFirst(app, service.cache)


@functools.cache
def freeze_startup_heap() -> None:
    """Keep what exists once the app has started (~80k long-lived objects) out of the cyclic
    collector's full passes, whose ~50 ms pauses were the stream's p99; once per process, after
    a collect (docs/design/api-internals.md, "Collector passes")."""
    gc.collect()
    gc.freeze()
