"""``create_app()``: the granian factory (``market_api.app:create_app``), wiring only."""

from __future__ import annotations

import functools
import gc

from litestar import Litestar, Router
from litestar.datastructures import State
from litestar.di import Provide

from market_api.access import access_for
from market_api.bars.routes import BarsController, HealthController, InstrumentController
from market_api.bars.service import MarketService
from market_api.http.docs import document_unauthorized, key_required, openapi_config
from market_api.http.errors import EXCEPTION_HANDLERS
from market_api.http.fastpath import CacheFirst
from market_api.ops.facts import StoreFacts
from market_api.ops.measured import Measured
from market_api.ops.processes import build_metrics
from market_api.ops.routes import MetricsController, ProbeController
from market_api.ops.tally import RequestTally, Traffic
from market_api.readers import open_reader
from market_api.settings import Settings
from market_api.stream.hub import StreamHub
from market_api.stream.routes import StreamController
from market_api.universe.routes import CalendarController, ListingsController


def create_app(settings: Settings | None = None) -> CacheFirst:
    """The API of one data home (from the environment unless ``settings`` is given): the
    Litestar app (``.app``, its ``state["service"]`` the ``MarketService``) behind the fast
    path that answers cached requests first."""
    settings = settings or Settings.from_env()
    access = access_for(settings)
    service = MarketService(settings, open_reader(settings))
    hub = StreamHub(service.reader, service.factors, settings)
    tally, facts = RequestTally(), StoreFacts(service.reader, settings.retry_after_seconds)
    metrics = build_metrics(settings, Traffic(tally, service.cache, hub), facts)

    def provide_service() -> MarketService:
        return service

    def provide_hub() -> StreamHub:
        return hub

    app = Litestar(
        route_handlers=[
            HealthController,
            ProbeController,
            Router(
                "/",
                route_handlers=[
                    InstrumentController,
                    BarsController,
                    StreamController,
                    MetricsController,
                    ListingsController,
                    CalendarController,
                ],
                security=key_required(settings.auth == "required"),
            ),
        ],
        dependencies={
            "service": Provide(provide_service, sync_to_thread=False),
            "hub": Provide(provide_hub, sync_to_thread=False),
            "facts": Provide(lambda: facts, sync_to_thread=False),
            "metrics": Provide(lambda: metrics, sync_to_thread=False),
        },
        exception_handlers=EXCEPTION_HANDLERS,
        on_startup=[access.start, service.start, hub.start, metrics.start, freeze_startup_heap],
        on_shutdown=[metrics.stop, hub.stop, service.stop, access.stop],
        cors_config=access.cors,
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
    if settings.auth == "required":
        document_unauthorized(app.openapi_schema)
    return Measured(app, service.cache, access.gate, tally=tally)


@functools.cache
def freeze_startup_heap() -> None:
    """Keep what exists once the app has started (~80k long-lived objects) out of the cyclic
    collector's full passes, whose ~50 ms pauses were the stream's p99; once per process, after
    a collect (docs/design/api-internals.md, "Collector passes")."""
    gc.collect()
    gc.freeze()
