"""The stream's routes: ``GET /instruments/{symbol}/stream`` and ``GET /stream?symbols=``,
answering ``text/event-stream`` (docs/design/api-internals.md, "The push stream")."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get
from litestar.params import Parameter
from litestar.response import Stream

from market_api.bars.params import AdjustmentParam, Symbol, check_once, parse_symbol
from market_api.bars.schemas import Adjustment
from market_api.http.errors import InvalidParameter
from market_api.http.openapi import error
from market_api.readers.errors import UnknownSymbol
from market_api.stream.body import StreamBody
from market_api.stream.changes import EventId, unknown_symbols
from market_api.stream.hub import StreamHub
from market_core.schema import DAILY_INTERVAL, INTRADAY_INTERVALS

MEDIA_TYPE = "text/event-stream"
MAX_SYMBOLS = 100
STREAM_INTERVALS: tuple[str, ...] = (DAILY_INTERVAL, *INTRADAY_INTERVALS)


def parse_interval(raw: str) -> str:
    if raw not in STREAM_INTERVALS:
        raise InvalidParameter(
            "interval",
            f"interval must be one of {', '.join(STREAM_INTERVALS)}: streams carry stored bars "
            "(weeks and months are built at read time; ask /instruments/{symbol}/ohlcv)",
        )
    return raw


def parse_symbols(raw: str | None) -> tuple[str, ...]:
    """Comma-separated, case-insensitive, each once, at most ``MAX_SYMBOLS``."""
    if raw is None:
        raise InvalidParameter("symbols", "symbols is missing; give one or more, comma-separated")
    parts = [part.strip() for part in raw.split(",")]
    if not any(parts):
        raise InvalidParameter("symbols", "symbols is empty; give one or more, comma-separated")
    symbols: list[str] = []
    for part in parts:
        if not part:
            raise InvalidParameter("symbols", "symbols has an empty entry; remove the extra comma")
        try:
            symbol = parse_symbol(part)
        except InvalidParameter as exc:
            raise InvalidParameter("symbols", f"{part!r}: {exc.detail}") from None
        if symbol not in symbols:
            symbols.append(symbol)
    if len(symbols) > MAX_SYMBOLS:
        raise InvalidParameter(
            "symbols", f"{len(symbols)} symbols given; a stream follows at most {MAX_SYMBOLS}"
        )
    return tuple(symbols)


_STREAM_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


_STREAM_ERRORS = {
    400: error("A parameter is malformed, an interval is not stored, or over 100 symbols"),
    404: error("No bars are stored for a symbol; `detail` names it"),
    503: error("As many streams are open as the server keeps; retry after Retry-After"),
}
StreamInterval = Annotated[
    str,
    Parameter(
        description=f"Bar length: one of {', '.join(STREAM_INTERVALS)} (stored bars only)",
        default=DAILY_INTERVAL,
    ),
]
Symbols = Annotated[
    str | None,
    Parameter(
        description=f"Comma-separated symbols, case-insensitive, at most {MAX_SYMBOLS}",
        required=True,
    ),
]
LastEventId = Annotated[
    str | None,
    Parameter(
        header="Last-Event-ID",
        description="Resume after this event id: the bars changed since, or event: reset",
        required=False,
    ),
]
_DESCRIPTION = (
    "Server-Sent Events. On connect, each symbol's newest bar (`event: bar`); then, after "
    "every commit, one `event: bar` per new or revised bar, data `{symbol, interval, "
    "timestamp, open, high, low, close, volume, revised}`, id `<commit>.<n>`. Reconnect with "
    "`Last-Event-ID` to get what changed since, or `event: reset` and the newest bars if the "
    "id is older than the change log keeps. A `: heartbeat` comment after 15 s of silence."
)


async def open_stream(
    request: Request[Any, Any, Any],
    hub: StreamHub,
    symbols: tuple[str, ...],
    interval: str,
    adjustment: Adjustment,
    last_event_id: str | None,
) -> Stream:
    """Validate, take a slot (or 503), check the symbols exist (404), then stream."""
    check_once(request, "adjustment", Adjustment)
    check_once(request, "interval", STREAM_INTERVALS)
    interval = parse_interval(interval)
    await hub.ready()
    hub.reserve()
    try:
        unknown = await hub.run(lambda cur: unknown_symbols(cur, symbols))
        if unknown:
            raise UnknownSymbol(", ".join(unknown))
        body = StreamBody(
            hub,
            symbols,
            interval,
            adjustment,
            EventId.parse(last_event_id),
            hub.settings.stream_heartbeat_seconds,
        )
    except BaseException:
        hub.release()
        raise
    return Stream(body, media_type=MEDIA_TYPE, headers=_STREAM_HEADERS)


class StreamController(Controller):
    tags = ["stream"]

    @get(
        "/instruments/{symbol:str}/stream",
        summary="New and revised bars of one symbol, pushed as Server-Sent Events",
        description=_DESCRIPTION,
        responses=_STREAM_ERRORS,
        media_type=MEDIA_TYPE,
    )
    async def symbol_stream(
        self,
        request: Request[Any, Any, Any],
        hub: StreamHub,
        symbol: Symbol,
        interval: StreamInterval = DAILY_INTERVAL,
        adjustment: AdjustmentParam = Adjustment.RAW,
        last_event_id: LastEventId = None,
    ) -> Stream:
        symbols = (parse_symbol(symbol),)
        return await open_stream(request, hub, symbols, interval, adjustment, last_event_id)

    @get(
        "/stream",
        summary="New and revised bars of several symbols, pushed as Server-Sent Events",
        description=_DESCRIPTION,
        responses=_STREAM_ERRORS,
        media_type=MEDIA_TYPE,
    )
    async def stream(
        self,
        request: Request[Any, Any, Any],
        hub: StreamHub,
        symbols: Symbols = None,
        interval: StreamInterval = DAILY_INTERVAL,
        adjustment: AdjustmentParam = Adjustment.RAW,
        last_event_id: LastEventId = None,
    ) -> Stream:
        return await open_stream(
            request, hub, parse_symbols(symbols), interval, adjustment, last_event_id
        )
