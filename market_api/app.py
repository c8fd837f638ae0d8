"""``create_app()``: the Litestar app factory (``granian --factory market_api.app:create_app``).

Also the one place where errors become responses: every non-200 answer has the ``ErrorBody``
shape, whether raised by our code (``errors.py``) or by Litestar (validation, unknown route).
"""

from __future__ import annotations

import functools
import gc
import logging
from typing import Any

from litestar import Litestar, MediaType, Request, Response
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from market_api.docs import openapi_config
from market_api.errors import ApiError, DataUnavailable, InvalidParameter
from market_api.fastpath import CacheFirst
from market_api.routes import HealthController, InstrumentController
from market_api.schemas import ErrorBody
from market_api.service import MarketService
from market_api.settings import Settings
from market_api.stream import StreamController, StreamHub

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> CacheFirst:
    """Build the API for one data home (from the environment unless ``settings`` is given).

    The routes are ordinary Litestar controllers; what is served is the Litestar app behind
    ``CacheFirst``, an outer ASGI layer that answers cached requests before Litestar routes
    them. ``.app`` is the Litestar app, its ``state["service"]`` the ``MarketService``."""
    settings = settings or Settings.from_env()
    service = MarketService(settings)
    hub = StreamHub(service, settings)

    def provide_service() -> MarketService:
        return service

    def provide_hub() -> StreamHub:
        return hub

    app = Litestar(
        route_handlers=[HealthController, InstrumentController, StreamController],
        dependencies={
            "service": Provide(provide_service, sync_to_thread=False),
            "hub": Provide(provide_hub, sync_to_thread=False),
        },
        exception_handlers={
            ApiError: api_error_handler,
            ValidationException: validation_error_handler,
            HTTPException: http_error_handler,
            Exception: unexpected_error_handler,
        },
        on_startup=[service.start, hub.start, freeze_startup_heap],
        on_shutdown=[hub.stop, service.stop],
        openapi_config=openapi_config(
            title="market-data API",
            version="1.0.0",
            description=(
                "Daily OHLCV bars loaded by the market pipeline, served from DuckDB. Every GET "
                "also answers HEAD: the same status and headers, no body."
            ),
        ),
        state=State({"service": service, "hub": hub}),
    )
    return CacheFirst(app, service.cache)


@functools.cache
def freeze_startup_heap() -> None:
    """Exclude what exists once the app has started (modules, classes, the routes: some 80k
    objects, all kept until exit) from the cyclic collector's full passes. Each pass over them
    took ~50 ms, a pause that lands on whatever request or stream event it interrupts: with
    1000 stream clients it was the p99 of commit-to-event (``bench/stream.py``). Collected
    first, so that only live objects are frozen; once per process, so that a process making
    many apps (the tests) does not freeze each one's leftovers out of the collector's reach."""
    gc.collect()
    gc.freeze()


def _error_response(
    status_code: int,
    error: str,
    detail: str,
    parameter: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response[ErrorBody]:
    return Response(
        ErrorBody(status_code=status_code, error=error, detail=detail, parameter=parameter),
        status_code=status_code,
        media_type=MediaType.JSON,
        headers=headers,
    )


def api_error_handler(_: Request[Any, Any, Any], exc: ApiError) -> Response[ErrorBody]:
    headers = None
    if isinstance(exc, DataUnavailable):
        headers = {"Retry-After": str(exc.retry_after_seconds)}
    parameter = exc.parameter if isinstance(exc, InvalidParameter) else None
    return _error_response(exc.status_code, exc.error, exc.detail, parameter, headers)


def validation_error_handler(
    _: Request[Any, Any, Any], exc: ValidationException
) -> Response[ErrorBody]:
    """Litestar's parameter validation, reshaped so ``parameter`` names the first bad one."""
    parameter: str | None = None
    detail = exc.detail
    if isinstance(exc.extra, list) and exc.extra and isinstance(exc.extra[0], dict):
        first = exc.extra[0]
        parameter = first.get("key")
        message = first.get("message")
        if parameter and message:
            detail = f"{parameter}: {message}"
    return _error_response(400, "invalid_parameter", detail, parameter)


def http_error_handler(_: Request[Any, Any, Any], exc: HTTPException) -> Response[ErrorBody]:
    error = "not_found" if exc.status_code == 404 else "http_error"
    return _error_response(exc.status_code, error, exc.detail, headers=exc.headers)


def unexpected_error_handler(
    request: Request[Any, Any, Any], exc: Exception
) -> Response[ErrorBody]:
    """A bug, not a client mistake: log it whole, tell the client nothing internal."""
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _error_response(HTTP_500_INTERNAL_SERVER_ERROR, "internal_error", "internal error")
