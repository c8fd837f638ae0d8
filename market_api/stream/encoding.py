"""Server-Sent Events as bytes: each event encoded once, whoever receives it."""

from __future__ import annotations

from datetime import date

import duckdb
import msgspec

from market_api.bars.questions import Read
from market_api.bars.schemas import Adjustment
from market_api.stream.changes import SEEN_WHOLE, ChangeRow
from market_core.exchange import EXCHANGE_TZ
from market_core.schema import DAILY_INTERVAL

HEARTBEAT = b": heartbeat\n\n"


class StreamBar(msgspec.Struct, gc=False):
    """One event's data: the bar as the ohlcv endpoint gives it, and whether it replaced a
    stored one."""

    symbol: str
    interval: str
    timestamp: date
    open: float
    high: float
    low: float
    close: float
    volume: int
    revised: bool


_encoder = msgspec.json.Encoder()


def encode(
    row: ChangeRow, adjustment: Adjustment, read: Read, cur: duckdb.DuckDBPyConnection
) -> bytes:
    """One ``event: bar``: prices adjusted as the ohlcv endpoint adjusts them
    (``queries.FactorSteps``, by the bar's day), the timestamp formatted as it formats it."""
    commit, n, symbol, interval, stamp, revised, o, h, low, c, volume = row
    day = stamp.date()
    if adjustment is not Adjustment.RAW:
        steps = read.steps(cur, symbol, adjustment)
        if steps:
            (_, o, h, low, c, volume) = steps.apply([(day, o, h, low, c, volume)], adjustment)[0]
    moment: date = day if interval == DAILY_INTERVAL else stamp.replace(tzinfo=EXCHANGE_TZ)
    data = _encoder.encode(StreamBar(symbol, interval, moment, o, h, low, c, volume, revised))
    event_id = str(commit) if n == SEEN_WHOLE else f"{commit}.{n}"
    return b"id: " + event_id.encode() + b"\nevent: bar\ndata: " + data + b"\n\n"


def reset_event(reason: str) -> bytes:
    return b"event: reset\ndata: " + _encoder.encode({"reason": reason}) + b"\n\n"
