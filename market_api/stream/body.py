"""The response body of one stream: its opening events, then its queue, with heartbeats."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import duckdb

from market_api.bars.questions import Read
from market_api.bars.schemas import Adjustment
from market_api.readers.errors import StoreUnavailable
from market_api.stream.changes import EventId, changes, commit_range, newest_bars
from market_api.stream.encoding import HEARTBEAT, encode, reset_event
from market_api.stream.hub import StreamHub, Subscriber

log = logging.getLogger(__name__)

EVENTS_PER_WRITE = 256
"""Events joined into one write: a backfill's thousands go out in bounded pieces."""


class StreamBody:
    """The response body of one stream. Owns the stream's slot from the handler on: it is
    given back when the body ends, and also when the response never started iterating (a
    client gone before its first byte)."""

    def __init__(
        self,
        hub: StreamHub,
        symbols: tuple[str, ...],
        interval: str,
        adjustment: Adjustment,
        since: EventId | None,
        heartbeat: float,
    ) -> None:
        self._hub = hub
        self._released = False
        self._events = self._generate(symbols, interval, adjustment, since, heartbeat)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._events

    def __del__(self) -> None:
        self._release()

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self._hub.release()

    async def _generate(
        self,
        symbols: tuple[str, ...],
        interval: str,
        adjustment: Adjustment,
        since: EventId | None,
        heartbeat: float,
    ) -> AsyncIterator[bytes]:
        hub = self._hub
        subscriber: Subscriber | None = None
        try:
            subscriber, position = await hub.subscribe(symbols, interval, adjustment)
            subscriber.task = asyncio.current_task()
            for chunk in await hub.run(lambda cur: _opening(cur, hub, subscriber, position, since)):
                yield chunk
            while True:
                try:
                    async with asyncio.timeout(heartbeat):
                        events = await subscriber.queue.get()
                except TimeoutError:
                    yield HEARTBEAT
                    continue
                for start in range(0, len(events), EVENTS_PER_WRITE):
                    yield b"".join(events[start : start + EVENTS_PER_WRITE])
        except StoreUnavailable as exc:
            log.info("stream ended: %s", exc.detail)
        except Exception:  # after the 200 went out nothing else can be said: end the stream
            log.exception("stream of %s failed", ",".join(symbols))
        finally:
            if subscriber is not None:
                hub.unsubscribe(subscriber)
            self._release()


def _opening(
    cur: duckdb.DuckDBPyConnection,
    hub: StreamHub,
    subscriber: Subscriber,
    position: int,
    since: EventId | None,
) -> list[bytes]:
    """What a stream starts with: the changes since ``since`` when the log still has them,
    else (no id, or one too old: ``event: reset`` first) each symbol's newest bar."""
    read = Read(hub.reader.data_version(), hub.factors)
    adjustment = subscriber.adjustment
    out: list[bytes] = []
    if since is not None:
        oldest, newest = commit_range(cur)
        kept_from = newest + 1 if oldest is None else oldest
        if max(kept_from - 1, 0) <= since.commit <= position:
            rows = changes(cur, since, position, subscriber.symbols, [subscriber.interval])
            return [encode(row, adjustment, read, cur) for row in rows]
        out.append(
            reset_event(
                f"event id {since.raw!r} is outside the change log kept "
                f"(commits {kept_from - 1} to {position}); starting from the newest bars"
            )
        )
    rows = newest_bars(cur, subscriber.symbols, subscriber.interval, position)
    out += [encode(row, adjustment, read, cur) for row in rows]
    return out
