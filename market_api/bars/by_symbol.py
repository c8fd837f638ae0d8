"""The daily bars of one data version again, in (symbol, timestamp) order, in an Arrow IPC file
of this process, mapped into memory.

From the store, a basket of symbols over years costs DuckDB's scan and decode of every block of
its symbols (0.14 s for 500 symbols x 5 years on one core, the floor of reading it there). From
this copy, a symbol's window is two binary searches in its days and its bars a slice of the
mapped file, copied once into the batch the writers encode. The copy is built in a thread of its
own on the first daily, unadjusted question at a data version, a span of symbols per query at
that version, and questions of that version read it once it is done; until then, and for any
other question, the store answers. Pages read from the mapping are handed back to the kernel
once copied, so the process's resident memory holds a batch, never the file. docs/api.md
("Bulk reads") says when it is used and what it costs.
"""

from __future__ import annotations

import bisect
import contextlib
import ctypes
import ctypes.util
import logging
import mmap
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from market_api.bars.bulk import BulkQuestion, Key, Pinned
from market_api.bars.copies import Builds, TooSmall, copy_name, remove_orphans
from market_api.bars.key_order import in_key_order
from market_api.bars.schemas import Adjustment, Interval, arrow_schema
from market_core.schema import TABLE

log = logging.getLogger(__name__)

FOLDER = "api_by_symbol"
"""The copies' folder under ``MARKET_DATA_HOME``: one file per API process, named by its pid."""
SUFFIX = ".arrow"
BUILDING = ".building.arrow"
"""The suffix of a copy being built; a finished one is renamed to ``<pid>-<id>.arrow``."""
CHUNK_ROWS = 131_072
"""Bars per query of a build and per record batch of the file (whole symbols, one symbol with
more a batch of its own): a build holds one chunk in memory, about 7 MB of Arrow."""
SCHEMA = arrow_schema(Interval.DAY, with_symbol=True)
EPOCH = date(1970, 1, 1)
_LOWEST, _HIGHEST = -(2**31), 2**31 - 1
"""The days of ``date32``: bounds of an open window."""

_COUNTS_SQL = f"""SELECT symbol, count(*) FROM {TABLE}
WHERE symbol IS NOT NULL AND timestamp IS NOT NULL GROUP BY symbol"""
_CHUNK_SQL = f"""SELECT symbol, timestamp, open, high, low, close, volume FROM {TABLE}
WHERE symbol >= $first AND symbol <= $last AND timestamp IS NOT NULL"""


def suits(question: BulkQuestion) -> bool:
    """Whether the copy holds ``question``'s bars: stored daily bars, unadjusted, of the
    newest data (the caller checks the version)."""
    return (
        question.interval is Interval.DAY
        and question.adjustment is Adjustment.RAW
        and question.as_of is None
    )


@dataclass(frozen=True, slots=True)
class Place:
    """Where a symbol's bars are: rows ``first`` to ``stop`` of record batch ``batch``."""

    batch: int
    first: int
    stop: int


class SymbolCopy:
    """One data version's copy, mapped: read-only, shared by every thread. It is never closed
    explicitly: the mapping goes with the last reference to the copy, so an answer under way
    when a newer copy replaces it reads on, from a file already unlinked."""

    def __init__(self, path: Path, places: dict[str, Place]) -> None:
        with path.open("rb") as file:
            self._map = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
        whole = pa.py_buffer(self._map)
        reader = pa.ipc.open_file(pa.BufferReader(whole))
        if reader.schema != SCHEMA:
            raise ValueError(f"{path.name}: another schema than the answers' ({reader.schema})")
        self._batches = [reader.get_batch(at) for at in range(reader.num_record_batches)]
        self._days = [_days_of(batch) for batch in self._batches]
        self._ranges = [_pages_of(batch, whole.address, len(self._map)) for batch in self._batches]
        self._places = places
        self._names = sorted(places)
        self.bars = sum(batch.num_rows for batch in self._batches)

    def read(
        self, question: BulkQuestion, span: Sequence[str] | None, after: Key | None, rows: int
    ) -> pa.Table:
        """What ``bulk.fetch`` gives for a daily, unadjusted ``question``: at most ``rows``
        bars after ``after``, of the symbols of ``span`` (of the question, or all, when None),
        in key order, in one batch of the answers' schema that owns its memory."""
        low, high = _window(question)
        after_day = None if after is None else _day_number(after[1])
        pieces: list[pa.RecordBatch] = []
        touched: set[int] = set()
        taken = 0
        for name in self._symbols(question, span, after):
            place = self._places.get(name)
            if place is None:
                continue
            since = low
            if after is not None and after_day is not None and name == after[0]:
                since = max(low, after_day + 1)
            days = self._days[place.batch][place.first : place.stop]
            first = place.first + int(days.searchsorted(since))
            stop = place.first + int(days.searchsorted(high))
            count = min(stop - first, rows - taken)
            if count > 0:
                pieces.append(self._batches[place.batch].slice(first, count))
                touched.add(place.batch)
                taken += count
            if taken >= rows:
                break
        table = _owned(pieces)
        self._release(touched)
        return table

    def _symbols(
        self, question: BulkQuestion, span: Sequence[str] | None, after: Key | None
    ) -> Sequence[str]:
        """The symbols to read, in order, from the key's on: ``fetch``'s SQL reads a span of a
        question without symbols as every symbol from its first to its last."""
        names: Sequence[str]
        if question.symbols is None:
            low = 0 if span is None else bisect.bisect_left(self._names, span[0])
            high = len(self._names) if span is None else bisect.bisect_right(self._names, span[-1])
            if after is not None:
                low = max(low, bisect.bisect_left(self._names, after[0]))
            return self._names[low:high]
        names = question.symbols if span is None else span
        if after is not None:
            names = names[bisect.bisect_left(names, after[0]) :]
        return names

    def _release(self, batches: set[int]) -> None:
        """Drop the pages of ``batches`` from this process's memory: they stay in the page
        cache, and any thread reading them again faults them back in."""
        for at in batches:
            start, stop = self._ranges[at]
            self._map.madvise(mmap.MADV_DONTNEED, start, stop - start)


def _days_of(batch: pa.RecordBatch) -> np.ndarray:
    """The ``timestamp`` column's days since the epoch, viewed in the mapping (no copy)."""
    column = batch.column("timestamp")
    values = column.buffers()[1]
    assert values is not None
    return np.frombuffer(values, dtype=np.int32, count=len(column), offset=column.offset * 4)


def _pages_of(batch: pa.RecordBatch, base: int, size: int) -> tuple[int, int]:
    """The page-aligned bytes of the mapping that hold ``batch``'s buffers."""
    buffers = [b for column in batch.columns for b in column.buffers() if b is not None]
    start = min(b.address for b in buffers) - base
    stop = max(b.address + b.size for b in buffers) - base
    page = mmap.PAGESIZE
    return start // page * page, min(-(-stop // page) * page, size)


def _owned(pieces: list[pa.RecordBatch]) -> pa.Table:
    """The pieces as one table in memory of its own, whatever their number (one piece is
    taken, not combined: combining a single chunk would hand back the mapping itself)."""
    if not pieces:
        return SCHEMA.empty_table()
    table = pa.Table.from_batches(pieces, SCHEMA)
    if len(pieces) > 1:
        return table.combine_chunks()
    return table.take(pa.array(np.arange(table.num_rows, dtype=np.int64)))


def _window(question: BulkQuestion) -> tuple[int, int]:
    """``[low, high)`` of ``question`` in days since the epoch (``queries.day_range``)."""
    low = _LOWEST if question.start is None else _day_number(question.start)
    end = question.end
    high = _HIGHEST if end is None or end == date.max else _day_number(end) + 1
    return low, high


def _day_number(moment: date) -> int:
    day = moment.date() if isinstance(moment, datetime) else moment
    return (day - EPOCH).days


class SymbolOrdered:
    """The copy of one data version, or none; ``copy_of`` gives it, ``want`` has one built."""

    def __init__(self, folder: Path, min_bars: int = 0, chunk_rows: int = CHUNK_ROWS) -> None:
        self._folder = folder
        self._min_bars = min_bars
        """Below this many bars a version gets no copy: its store is read about as quickly."""
        self._chunk_rows = chunk_rows
        self._held: tuple[tuple[str | None], SymbolCopy, Path] | None = None
        self._builds = Builds()

    def copy_of(self, version: str | None) -> SymbolCopy | None:
        """The copy of ``version`` if that is the one held."""
        held = self._held
        return held[1] if held is not None and held[0] == (version,) else None

    def want(self, version: str | None, run: Pinned) -> None:
        """Build the copy of ``version`` (read through ``run``) in a thread, unless it is held,
        being built, or failed before."""
        key, held = (version,), self._held
        self._builds.start(
            key,
            None if held is None else held[0],
            lambda: self._build(key, run),
            "market-api-by-symbol",
        )

    def _build(self, key: tuple[str | None], run: Pinned) -> None:
        name = copy_name()
        building, path = self._folder / f"{name}{BUILDING}", self._folder / f"{name}{SUFFIX}"
        started = time.monotonic()

        def make() -> SymbolCopy:
            counts = sorted(run(lambda cur: cur.execute(_COUNTS_SQL).fetchall()))
            if sum(count for _, count in counts) < self._min_bars:
                raise TooSmall
            self._folder.mkdir(parents=True, exist_ok=True)
            held = self._held
            remove_orphans(self._folder, f"*{SUFFIX}", None if held is None else held[2], _unlink)
            places = _write(building, counts, run, self._chunk_rows, self._builds.stop)
            copy = SymbolCopy(building, places)
            _hand_back_freed_memory()
            return copy

        copy = self._builds.attempt(key, "symbol-ordered", make, (building, path), _unlink)
        if copy is None:
            return
        self._swap(key, copy, building, path)
        log.info(
            "symbol-ordered copy of %s built in %.1f s (%d bars)",
            key[0],
            time.monotonic() - started,
            copy.bars,
        )

    def _swap(self, key: tuple[str | None], copy: SymbolCopy, building: Path, path: Path) -> None:
        """Give ``copy``'s file its final name, then hold it: the copy that answers has its
        final name by the time it does (the mapping follows the file through the rename)."""
        with self._builds.lock:
            old = self._held
            if self._builds.stop.is_set():
                old = None
                _unlink(building)
            else:
                try:
                    building.rename(path)
                except OSError as exc:
                    log.warning("the symbol-ordered copy keeps its building name: %s", exc)
                    path = building
                self._held = (key, copy, path)
            self._builds.done()
        if old is not None:
            _unlink(old[2])  # answers reading it keep their mapping

    def close(self) -> None:
        """Stop a build and let go of the copy (its file removed)."""
        self._builds.stop.set()
        with self._builds.lock:
            held, self._held = self._held, None
        if held is not None:
            _unlink(held[2])


def _write(
    path: Path, counts: list[tuple[str, int]], run: Pinned, rows: int, stop: threading.Event
) -> dict[str, Place]:
    """Every bar into ``path``, a chunk of whole symbols per query and per record batch, each
    checked to hold exactly the counted bars, in key order, all at midnight; where each
    symbol's bars are."""
    places: dict[str, Place] = {}
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, SCHEMA) as writer:
        for number, chunk in enumerate(_chunks(counts, rows)):
            if stop.is_set():
                raise InterruptedError("the API is shutting down")
            values = {"first": chunk[0][0], "last": chunk[-1][0]}
            found = run(lambda cur: cur.execute(_CHUNK_SQL, values).to_arrow_table())  # noqa: B023
            writer.write_batch(_batch(in_key_order(found), chunk))
            at = 0
            for symbol, count in chunk:
                places[symbol] = Place(number, at, at + count)
                at += count
    return places


def _chunks(counts: list[tuple[str, int]], rows: int) -> list[list[tuple[str, int]]]:
    """``counts`` (in symbol order) cut into runs of whole symbols of at most ``rows`` bars."""
    chunks: list[list[tuple[str, int]]] = []
    chunk: list[tuple[str, int]] = []
    held = 0
    for symbol, count in counts:
        if chunk and held + count > rows:
            chunks.append(chunk)
            chunk, held = [], 0
        chunk.append((symbol, count))
        held += count
    if chunk:
        chunks.append(chunk)
    return chunks


def _batch(found: pa.Table, chunk: list[tuple[str, int]]) -> pa.RecordBatch:
    """``found`` (stored columns, in key order) as one record batch of the answers' schema.
    A bar whose timestamp is not a midnight leaves the version to the store: its date alone
    would not say how the store's window and keyset compare it."""
    symbols = pc.value_counts(found.column("symbol"))
    if [(s["values"], s["counts"]) for s in symbols.to_pylist()] != chunk:
        raise RuntimeError("the store's bars changed while the copy was built")
    moments = found.column("timestamp")
    days = moments.cast(pa.date32())
    if not pc.all(pc.equal(days.cast(moments.type), moments)).as_py():
        raise ValueError("a daily bar's timestamp is not a midnight")
    columns = [days if field.name == "timestamp" else found.column(field.name) for field in SCHEMA]
    table = pa.Table.from_arrays(
        [c.cast(f.type) for c, f in zip(columns, SCHEMA, strict=True)], schema=SCHEMA
    ).combine_chunks()
    return table.to_batches()[0]


def _hand_back_freed_memory() -> None:
    """Return the heap the build's queries freed to the system (glibc's ``malloc_trim``):
    glibc keeps a thread's freed heap for later allocations, and the build thread's results
    (about 35 MB for 5 million bars) would stay in the process's resident memory for good."""
    libc = ctypes.util.find_library("c")
    trim = getattr(ctypes.CDLL(libc), "malloc_trim", None) if libc else None
    if trim is not None:
        trim(0)


def _unlink(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
