"""A run's materializations reported while it runs, not all after it.

Dagster stores each materialization as its own SQLite writes (two connections, two commits:
~5-10 ms), one per symbol and stage. Yielded after the run, 5,000 of them made a 1000-symbol
backfill wait tens of seconds after its last load; yielded as each result comes, they are
written on the op's thread while the runner goes on with the next symbols on its own thread
(both mostly wait on the network, the disk or native code). Log lines take the same queue, so
the op's thread is the only one that talks to Dagster.

Each of those writes hands the interpreter lock over several times (every SQLite call releases
it), and a thread waiting for it gets it back only after the interpreter's switch interval (5 ms)
if the runner is busy in Python meanwhile: a handful of waits an event, more than the writes
themselves. While the runner works, the interval is ``SWITCH_SECONDS``.
docs/design/runs-and-assets.md.
"""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from dagster import AssetExecutionContext, AssetMaterialization

from market_pipeline.defs.outcomes import metadata
from market_pipeline.runs.outcome import BatchOutcome, StageResult

_DONE = object()
WAIT_SECONDS = 0.5
"""How long the op's thread waits for the next result before it looks again (interrupts)."""
SWITCH_SECONDS = 0.0005
"""The interpreter's switch interval while the runner's thread and the op's share it."""


@contextmanager
def switching_every(seconds: float) -> Iterator[None]:
    """The interpreter's thread switch interval at most ``seconds`` inside; restored after."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(min(before, seconds))
    try:
        yield
    finally:
        sys.setswitchinterval(before)


class Streamed:
    """What the runner's thread hands the op's thread: each result, and each log line."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._stop = threading.Event()

    def result(self, stage: str, symbol: str, result: StageResult) -> None:
        self._queue.put((stage, symbol, result))

    def log(self, message: str) -> None:
        self._queue.put(message)

    def stopped(self) -> bool:
        return self._stop.is_set()

    def run(
        self, context: AssetExecutionContext, work: Callable[[], BatchOutcome]
    ) -> Generator[AssetMaterialization, None, BatchOutcome]:
        """``work`` on a thread of its own; a materialization per result as it comes, then the
        outcome. If the op is interrupted, the runner stops before its next symbol."""
        with switching_every(SWITCH_SECONDS), ThreadPoolExecutor(1, "batch-run") as pool:
            future = pool.submit(work)
            future.add_done_callback(lambda _: self._queue.put(_DONE))
            try:
                while (item := self._next()) is not _DONE:
                    if isinstance(item, str):
                        context.log.info(item)
                    elif isinstance(item, tuple):
                        stage, symbol, result = item
                        yield AssetMaterialization(
                            asset_key=stage, partition=symbol, metadata=metadata(result)
                        )
            finally:
                self._stop.set()
        return future.result()

    def _next(self) -> object:
        while True:
            try:
                return self._queue.get(timeout=WAIT_SECONDS)
            except queue.Empty:
                continue
