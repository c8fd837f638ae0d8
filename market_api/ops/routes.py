"""``GET /ready`` (readiness) and ``GET /metrics`` (Prometheus); ``/health`` stays liveness."""

from __future__ import annotations

from datetime import date
from typing import Any, Literal, Protocol

import msgspec
from litestar import Controller, Response, get
from litestar.openapi.datastructures import ResponseSpec

from market_api.http.errors import ErrorBody, Unavailable
from market_api.ops.facts import StoreFacts
from market_api.readers.errors import StoreUnavailable

METRICS_MEDIA_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""Prometheus' text format, what ``prometheus_client.generate_latest`` writes."""
NOT_READY_RETRY_SECONDS = 5
"""The ``Retry-After`` of a 503 before the first load: a load takes seconds at least."""


class Ready(msgspec.Struct):
    status: Literal["ready"]
    data_version: str | None
    newest_bar_date: date


class NotReady(Unavailable):
    """The replica should get no traffic yet: no bars, or a store it cannot read."""

    error = "not_ready"


class Exposition(Protocol):
    """``ops.metrics.Metrics``, which is built only once ``prometheus_client``'s mode is set."""

    async def render(self) -> bytes: ...


class ProbeController(Controller):
    tags = ["health"]

    @get(
        "/ready",
        summary="Readiness: 200 once the store is open and holds bars",
        responses={
            503: ResponseSpec(
                data_container=ErrorBody,
                description="Not ready: the reason in detail; retry after Retry-After seconds",
                generate_examples=False,
            )
        },
    )
    async def ready(self, facts: StoreFacts) -> Ready:
        """Asks the store once per data version; ``/health`` answers even before a load."""
        try:
            newest = await facts.newest_bar()
        except StoreUnavailable as exc:
            detail = f"the store cannot be read: {exc.detail}"
            raise NotReady(detail, exc.retry_after_seconds) from None
        if newest is None:
            raise NotReady(
                "no bars loaded yet: the store holds no daily bars (run make ingest)",
                NOT_READY_RETRY_SECONDS,
            )
        return Ready(status="ready", data_version=facts.version(), newest_bar_date=newest)


class MetricsController(Controller):
    tags = ["health"]

    @get("/metrics", summary="Prometheus metrics (text format)", media_type=METRICS_MEDIA_TYPE)
    async def metrics(self, metrics: Any) -> Response[bytes]:
        """Names and meanings: docs/metrics.md."""
        exposition: Exposition = metrics  # Litestar cannot validate a Protocol-typed parameter
        body = await exposition.render()
        return Response(content=body, media_type=METRICS_MEDIA_TYPE)
