"""The hub: the process's one follower of the change log, and the registry of its streams.

When the reader's data version moves, the hub reads the new commits' changes for the symbols
somebody follows (in a worker thread), encodes each event once per adjustment asked for, and
hands every subscriber references to those bytes; a subscriber that falls behind is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio.to_thread
import duckdb

from market_api.bars.factors import FactorCache
from market_api.bars.questions import Read
from market_api.bars.schemas import Adjustment
from market_api.http.errors import Unavailable
from market_api.readers import Query, Reader
from market_api.readers.errors import StoreUnavailable
from market_api.settings import Settings
from market_api.stream.changes import EventId, Key, changes, commit_range
from market_api.stream.encoding import encode

log = logging.getLogger(__name__)

T = TypeVar("T")

QUIET_SECONDS = 0.2
COLLECT_EVERY_SECONDS = 5.0
"""With streams open the hub runs the cyclic collector's full pass itself, at most this often
and only ``QUIET_SECONDS`` after a commit's fan-out, so that the automatic pass does not land
in one (docs/design/api-internals.md, "Collector passes")."""


class StreamsFull(Unavailable):
    """As many streams are open as ``stream_max_clients`` allows."""

    error = "too_many_streams"


@dataclass(eq=False)
class Subscriber:
    """One stream: what it follows and the commits' events not yet written to it."""

    symbols: tuple[str, ...]
    interval: str
    adjustment: Adjustment
    queue: asyncio.Queue[list[bytes]]
    task: asyncio.Task[Any] | None = None
    dropped: bool = False

    @property
    def keys(self) -> list[Key]:
        return [(symbol, self.interval) for symbol in self.symbols]


@dataclass
class _Batch:
    last: int
    events: list[tuple[Key, dict[Adjustment, bytes]]] = field(default_factory=list)


class StreamHub:
    """The process's one follower of the change log, and the registry of its streams."""

    def __init__(self, reader: Reader, factors: FactorCache, settings: Settings) -> None:
        self._reader = reader
        self._factors = factors
        self._settings = settings
        self._by_key: dict[Key, set[Subscriber]] = {}
        self._open = 0
        self._waiting = 0
        """Streams waiting to register: the hub reads for them even with no subscriber."""
        self._position: int | None = None
        self._version: str | None = None
        self._lock = asyncio.Lock()
        self._ready = asyncio.Event()
        self._ticked = asyncio.Event()
        """Set after every look at the change log, whether it worked or not."""
        self._unavailable: StoreUnavailable | None = None
        """Why the last look failed, while the store cannot be read (then streams that wait
        to start get a 503 at once)."""
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0
        """Streams dropped for falling behind, since start (for logs and benchmarks)."""

    @property
    def open_streams(self) -> int:
        return self._open

    @property
    def reader(self) -> Reader:
        return self._reader

    @property
    def factors(self) -> FactorCache:
        return self._factors

    @property
    def settings(self) -> Settings:
        return self._settings

    async def ready(self) -> None:
        """Wait for the hub's look at the change log; a 503 if the store stays busy, or at
        once when the look failed because the store cannot be read."""
        self._waiting += 1
        try:
            async with asyncio.timeout(self._settings.unavailable_wait_seconds):
                while not self._ready.is_set():
                    if (failure := self._unavailable) is not None:
                        raise StoreUnavailable(failure.detail, failure.retry_after_seconds)
                    self._ticked.clear()
                    await self._ticked.wait()
        except TimeoutError:
            raise StoreUnavailable(
                "the stream cannot start: the data could not be read in time; retry shortly",
                retry_after_seconds=self._settings.retry_after_seconds,
            ) from None
        finally:
            self._waiting -= 1

    async def start(self) -> None:
        """Start following the data version (Litestar ``on_startup``, in the server's loop)."""
        self._lock = asyncio.Lock()
        self._ready = asyncio.Event()
        self._ticked = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._follow())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for subscribers in list(self._by_key.values()):
            for subscriber in list(subscribers):
                self._drop(subscriber)

    def reserve(self) -> None:
        """Count one more stream, or refuse it with a 503 beyond ``stream_max_clients``."""
        if self._open >= self._settings.stream_max_clients:
            raise StreamsFull(
                f"{self._open} streams are open, the most this server keeps "
                "(MARKET_API_STREAM_MAX_CLIENTS); retry later",
                retry_after_seconds=self._settings.stream_retry_after_seconds,
            )
        self._open += 1

    def release(self) -> None:
        self._open -= 1

    async def run(self, query: Query[T]) -> T:
        """``query`` on the reader at its current data version, in a worker thread."""
        return await anyio.to_thread.run_sync(self._reader.run, query)

    async def subscribe(
        self, symbols: tuple[str, ...], interval: str, adjustment: Adjustment
    ) -> tuple[Subscriber, int]:
        """Register a stream; return it and the commit up to which the hub has handed out
        events (later ones reach its queue). Taken under the hub's lock, so no commit falls
        between what the caller reads itself and what the queue gets."""
        queue: asyncio.Queue[list[bytes]] = asyncio.Queue(self._settings.stream_queue_commits)
        subscriber = Subscriber(symbols, interval, adjustment, queue)
        self._waiting += 1  # until registered: the hub keeps its position meanwhile
        try:
            while True:
                await self.ready()
                async with self._lock:
                    if self._position is None:
                        continue
                    for key in subscriber.keys:
                        self._by_key.setdefault(key, set()).add(subscriber)
                    return subscriber, self._position
        finally:
            self._waiting -= 1

    def unsubscribe(self, subscriber: Subscriber) -> None:
        for key in subscriber.keys:
            subscribers = self._by_key.get(key)
            if subscribers is not None:
                subscribers.discard(subscriber)
                if not subscribers:
                    del self._by_key[key]

    async def _follow(self) -> None:
        quiet_since = collected_at = time.monotonic()
        while True:
            now = time.monotonic()
            quiet = now - quiet_since >= QUIET_SECONDS
            if self._by_key and quiet and now - collected_at >= COLLECT_EVERY_SECONDS:
                gc.collect()
                collected_at = time.monotonic()
            position = self._position
            failed = True
            try:
                await self._tick()
                failed, self._unavailable = False, None
                if self._position != position:
                    quiet_since = time.monotonic()
            except asyncio.CancelledError:
                raise
            except StoreUnavailable as exc:  # the reader tells of an outage itself: one line
                if self._unavailable is None:
                    log.info("stream hub: the change log cannot be read now: %s", exc.detail)
                self._unavailable = exc
            except Exception:  # a bug: logged whole; the next tick tries again
                log.exception("stream hub: reading the change log failed")
            self._ticked.set()
            settings = self._settings
            await asyncio.sleep(
                settings.retry_after_seconds if failed else settings.stream_poll_seconds
            )

    async def _tick(self) -> None:
        if not self._by_key and not self._waiting:
            # Nobody follows: read nothing, and leave the store alone (in file mode a read
            # opens the DuckDB file); the next stream makes the hub look again.
            self._position = None
            self._ready.clear()
            return
        version = self._reader.data_version()
        if self._position is not None and version == self._version:
            return
        async with self._lock:
            wanted: dict[Key, frozenset[Adjustment]] = {
                key: frozenset(s.adjustment for s in subs) for key, subs in self._by_key.items()
            }
            position = self._position
            batch: _Batch = await self.run(lambda cur: self._read(cur, position, wanted, version))
            self._version, self._position = version, batch.last
            self._fan_out(batch.events)
        self._ready.set()

    def _read(
        self,
        cur: duckdb.DuckDBPyConnection,
        position: int | None,
        wanted: dict[Key, frozenset[Adjustment]],
        version: str | None,
    ) -> _Batch:
        _, last = commit_range(cur)
        if position is None or last <= position:
            return _Batch(last)  # first tick: follow from now on; else nothing new
        symbols = sorted({symbol for symbol, _ in wanted})
        intervals = {interval for _, interval in wanted}
        rows = changes(cur, EventId(position), last, symbols, intervals)
        read = Read(version, self._factors)
        batch = _Batch(last)
        for row in rows:
            key = (row[2], row[3])
            adjustments = wanted.get(key)
            if adjustments:
                batch.events.append((key, {a: encode(row, a, read, cur) for a in adjustments}))
        return batch

    def _fan_out(self, events: list[tuple[Key, dict[Adjustment, bytes]]]) -> None:
        pending: dict[Subscriber, list[bytes]] = {}
        for key, encoded in events:
            for subscriber in self._by_key.get(key, ()):
                pending.setdefault(subscriber, []).append(encoded[subscriber.adjustment])
        for subscriber, chunks in pending.items():
            try:
                subscriber.queue.put_nowait(chunks)
            except asyncio.QueueFull:
                log.info("stream of %s dropped: it fell behind", ",".join(subscriber.symbols))
                self._drop(subscriber)

    def _drop(self, subscriber: Subscriber) -> None:
        """Forget a stream that fell behind: no more events, its memory freed, its response
        ended even while it waits on a full socket."""
        self.unsubscribe(subscriber)
        subscriber.dropped = True
        self.dropped += 1
        while not subscriber.queue.empty():
            subscriber.queue.get_nowait()
        if subscriber.task is not None:
            subscriber.task.cancel()
