"""The push stream: new and revised bars as Server-Sent Events.

``GET /instruments/{symbol}/stream`` and ``GET /stream?symbols=A,B`` answer
``text/event-stream``. A client first gets each symbol's newest bar, then, after every commit
that changed bars it follows, one ``event: bar`` per new or revised bar, in commit order.

The loaders log every change in ``bar_changes`` under a commit id, in the transaction of the
bars themselves (``market_pipeline.store.changes``). One ``StreamHub`` per process follows the
store's data version; when it moves, the hub reads the changes of the commits it has not seen,
for the symbols somebody follows, with the values each commit gave the bars, encodes each event once
per adjustment asked for, and hands every subscriber the references to its events. Encoding and
SQL run in a worker thread; the fan-out is a few dictionary lookups per event in the event loop.

Event ids are ``<commit>.<n>``, ``n`` the bar's place among all the bars of its commit ordered
by (symbol, interval, timestamp), whichever of them a client follows. That order is fixed once
the commit is, so a client that reconnects with ``Last-Event-ID: 7.12`` gets the rest of commit
7 after its bar 12 and every later commit, and loses nothing even when the connection dropped
in the middle of a commit; ``<commit>`` alone (what the bars sent on connect carry) means that
commit was seen whole. An id older than the change log keeps (``bar_commits``) gets
``event: reset`` followed by the newest bars, as on connect.

Bounds: at most ``stream_max_clients`` streams (one more gets a 503 with ``Retry-After``); each
stream holds at most ``stream_queue_commits`` commits' worth of event references, and a client
that falls further behind (it stopped reading, its socket is full) is dropped: its queue
emptied and its response task cancelled, so it holds nothing and slows nobody. Lines are
``\\n``-terminated; a comment line (``: heartbeat``) goes out after ``stream_heartbeat_seconds``
of silence.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Annotated, Any

import anyio.to_thread
import duckdb
import msgspec
from litestar import Controller, Request, get
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter
from litestar.response import Stream

from market_api.errors import DataUnavailable, InvalidParameter, UnknownSymbol
from market_api.routes import AdjustmentParam, Symbol
from market_api.schemas import Adjustment, ErrorBody
from market_api.service import MarketService, Read, check_once, parse_symbol
from market_api.settings import Settings
from market_core.exchange import EXCHANGE_TZ
from market_core.schema import (
    CHANGES_TABLE,
    COMMITS_TABLE,
    DAILY_INTERVAL,
    INTRADAY_INTERVALS,
    INTRADAY_TABLE,
    TABLE,
)

log = logging.getLogger(__name__)

MEDIA_TYPE = "text/event-stream"
MAX_SYMBOLS = 100
STREAM_INTERVALS: tuple[str, ...] = (DAILY_INTERVAL, *INTRADAY_INTERVALS)
HEARTBEAT = b": heartbeat\n\n"
EVENTS_PER_WRITE = 256
"""Events joined into one write: a backfill's thousands go out in bounded pieces."""
QUIET_SECONDS = 0.2
COLLECT_EVERY_SECONDS = 5.0
"""With streams open the hub runs the cyclic collector's full pass itself, at most this often
and only ``QUIET_SECONDS`` after a commit's fan-out. The automatic pass fires while something
allocates, which with 1000 streams was a fan-out: 60-90 ms added to one commit's events in
twenty (``bench/stream.py``). Run when nothing is being sent, it leaves the automatic one
little to do, and the p99 from commit to event went from ~170 to ~120 ms on a loaded machine."""
_SEEN_WHOLE = 2**62
"""``n`` of an id without one: every bar of the commit was seen."""


class StreamsFull(DataUnavailable):
    """As many streams are open as ``stream_max_clients`` allows."""

    error = "too_many_streams"


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

ChangeRow = tuple[int, int, str, str, datetime, bool, float, float, float, float, int]
"""commit_id, n, symbol, interval, timestamp, revised, open, high, low, close, volume."""
Key = tuple[str, str]
"""(symbol, interval): what a subscription follows."""

_CHANGES_SQL = f"""
WITH numbered AS (
    SELECT commit_id, symbol, interval, timestamp, revised, open, high, low, close, volume,
        row_number() OVER (PARTITION BY commit_id ORDER BY symbol, interval, timestamp) - 1 AS n
    FROM {CHANGES_TABLE}
    WHERE commit_id >= $first AND commit_id <= $last
)
SELECT commit_id, n, symbol, interval, timestamp, revised, open, high, low, close, volume
FROM numbered
WHERE symbol IN (SELECT unnest($symbols)) AND interval IN (SELECT unnest($intervals))
    AND (commit_id > $after_commit OR n > $after_n)
"""
"""The log alone: each change carries the values its commit gave the bar, so a commit's events
never join the bar tables (after a load, in file mode, their indexes are cold)."""
_NEWEST = """
SELECT symbol, {interval}, max(timestamp), arg_max(open, timestamp), arg_max(high, timestamp),
    arg_max(low, timestamp), arg_max(close, timestamp), arg_max(volume, timestamp)
FROM {table}
WHERE symbol IN (SELECT unnest($symbols)) {where}
GROUP BY ALL
ORDER BY symbol
"""
_NEWEST_DAILY_SQL = _NEWEST.format(interval=f"'{DAILY_INTERVAL}'", table=TABLE, where="")
_NEWEST_INTRADAY_SQL = _NEWEST.format(
    interval="interval", table=INTRADAY_TABLE, where="AND interval = $interval"
)
_KNOWN_SQL = "SELECT DISTINCT symbol FROM {table} WHERE symbol IN (SELECT unnest($symbols))"
_COMMITS_SQL = f"SELECT min(commit_id), max(commit_id) FROM {COMMITS_TABLE}"


@dataclass(frozen=True, slots=True)
class EventId:
    """Where a client stands: every bar of commits before ``commit`` and those of ``commit``
    up to ``n`` seen."""

    commit: int
    n: int = _SEEN_WHOLE
    raw: str = ""

    @classmethod
    def parse(cls, raw: str | None) -> EventId | None:
        """``<commit>`` or ``<commit>.<n>``; None without a header. Anything else is an id no
        commit has (-1): the client gets a reset rather than a resume from nowhere."""
        if not raw:
            return None
        head, _, tail = raw.strip().partition(".")
        if not head.isdigit() or (tail and not tail.isdigit()):
            return cls(-1, raw=raw[:40])
        return cls(int(head), int(tail) if tail else _SEEN_WHOLE, raw=raw.strip())


# ---------------------------------------------------------------------------------------------
# The SQL side, run in worker threads.


def _missing_table(exc: duckdb.Error) -> bool:
    """A store written before the change log or intraday bars existed lacks their tables."""
    return isinstance(exc, duckdb.CatalogException)


def commit_range(cur: duckdb.DuckDBPyConnection) -> tuple[int | None, int]:
    """(oldest kept commit or None, newest commit or 0)."""
    try:
        row = cur.execute(_COMMITS_SQL).fetchone()
    except duckdb.Error as exc:
        if _missing_table(exc):
            return None, 0
        raise
    if row is None or row[1] is None:
        return None, 0
    return int(row[0]), int(row[1])


def changes(
    cur: duckdb.DuckDBPyConnection,
    since: EventId,
    last: int,
    symbols: Sequence[str],
    intervals: Iterable[str],
) -> list[ChangeRow]:
    """The changed bars after ``since`` up to commit ``last``, of ``symbols`` in ``intervals``,
    with the values each commit gave them, by (commit, n)."""
    wanted = set(intervals)
    first = since.commit + 1 if since.n == _SEEN_WHOLE else since.commit
    if not symbols or not wanted or last < first:
        return []
    params = {
        "first": first,  # a commit seen whole is not numbered again: it may be a backfill's
        "last": last,
        "after_commit": since.commit,
        "after_n": since.n,
        "symbols": list(symbols),
        "intervals": sorted(wanted),
    }
    rows = _fetch(cur, _CHANGES_SQL, params)
    rows.sort(key=lambda row: (row[0], row[1]))
    return rows


def newest_bars(
    cur: duckdb.DuckDBPyConnection, symbols: Sequence[str], interval: str, commit: int
) -> list[ChangeRow]:
    """Each symbol's newest bar of ``interval``, as change rows of ``commit`` (seen whole)."""
    if interval == DAILY_INTERVAL:
        found = _fetch(cur, _NEWEST_DAILY_SQL, {"symbols": list(symbols)})
    else:
        found = _fetch(cur, _NEWEST_INTRADAY_SQL, {"symbols": list(symbols), "interval": interval})
    return [
        (commit, _SEEN_WHOLE, s, i, t, False, o, h, lo, c, v) for s, i, t, o, h, lo, c, v in found
    ]


def unknown_symbols(cur: duckdb.DuckDBPyConnection, symbols: Sequence[str]) -> list[str]:
    """The symbols with neither daily nor intraday bars (the ohlcv endpoint's 404)."""
    known: set[str] = set()
    for table in (TABLE, INTRADAY_TABLE):
        rows = _fetch(cur, _KNOWN_SQL.format(table=table), {"symbols": list(symbols)})
        known.update(row[0] for row in rows)
    return [s for s in symbols if s not in known]


def _fetch(cur: duckdb.DuckDBPyConnection, sql: str, params: dict[str, object]) -> list[Any]:
    try:
        return cur.execute(sql, params).fetchall()
    except duckdb.Error as exc:
        if _missing_table(exc):
            return []
        raise


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
    event_id = str(commit) if n == _SEEN_WHOLE else f"{commit}.{n}"
    return b"id: " + event_id.encode() + b"\nevent: bar\ndata: " + data + b"\n\n"


def reset_event(reason: str) -> bytes:
    return b"event: reset\ndata: " + _encoder.encode({"reason": reason}) + b"\n\n"


# ---------------------------------------------------------------------------------------------
# The hub and its subscribers, in the event loop.


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

    def __init__(self, service: MarketService, settings: Settings) -> None:
        self._service = service
        self._settings = settings
        self._by_key: dict[Key, set[Subscriber]] = {}
        self._open = 0
        self._waiting = 0
        """Streams waiting to register: the hub reads for them even with no subscriber."""
        self._position: int | None = None
        self._version: str | None = None
        self._lock = asyncio.Lock()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0
        """Streams dropped for falling behind, since start (for logs and benchmarks)."""

    @property
    def open_streams(self) -> int:
        return self._open

    @property
    def service(self) -> MarketService:
        return self._service

    @property
    def settings(self) -> Settings:
        return self._settings

    async def ready(self) -> None:
        """Wait for the hub's look at the change log; a 503 if the store stays busy."""
        self._waiting += 1
        try:
            await asyncio.wait_for(self._ready.wait(), self._settings.unavailable_wait_seconds)
        except TimeoutError:
            raise DataUnavailable(
                "the stream cannot start: the data could not be read in time; retry shortly",
                retry_after_seconds=self._settings.retry_after_seconds,
            ) from None
        finally:
            self._waiting -= 1

    async def start(self) -> None:
        """Start following the data version (Litestar ``on_startup``, in the server's loop)."""
        self._lock = asyncio.Lock()
        self._ready = asyncio.Event()
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

    async def run(self, query: Any) -> Any:
        """``query`` on the store, in a worker thread."""
        return await anyio.to_thread.run_sync(self._service.db.run, query)

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
            try:
                await self._tick()
                if self._position != position:
                    quiet_since = time.monotonic()
            except asyncio.CancelledError:
                raise
            except Exception:  # a busy or unreachable store: the next tick tries again
                log.exception("stream hub: reading the change log failed")
                await asyncio.sleep(self._settings.retry_after_seconds)
            await asyncio.sleep(self._settings.stream_poll_seconds)

    async def _tick(self) -> None:
        if not self._by_key and not self._waiting:
            # Nobody follows: read nothing, and leave the store alone (in file mode a read
            # opens the DuckDB file); the next stream makes the hub look again.
            self._position = None
            self._ready.clear()
            return
        version = self._service.db.data_version()
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
        read = Read(version, self._service.factors)
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
        except DataUnavailable as exc:
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
    read = Read(hub.service.db.data_version(), hub.service.factors)
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


# ---------------------------------------------------------------------------------------------
# The routes.


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


def _error(description: str) -> ResponseSpec:
    return ResponseSpec(data_container=ErrorBody, description=description, generate_examples=False)


_STREAM_ERRORS = {
    400: _error("A parameter is malformed, an interval is not stored, or over 100 symbols"),
    404: _error("No bars are stored for a symbol; `detail` names it"),
    503: _error("As many streams are open as the server keeps; retry after Retry-After"),
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
