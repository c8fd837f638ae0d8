"""Every symbol's adjustment steps for the current data version, kept in memory.

Computed for all symbols at once (in the background, after the first adjusted question of a
version) they cost a fraction of a millisecond each, against twice a one-year answer for one
symbol alone (docs/design/api-internals.md, "Adjustment steps in memory").
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import duckdb

from market_api.bars import queries
from market_api.bars.queries import NO_STEPS, FactorSteps

log = logging.getLogger(__name__)

Run = Callable[[str | None, Callable[[duckdb.DuckDBPyConnection], Any]], Any]
"""A query on a cursor at the given data version (a lake pins the snapshot; the file has only
its latest): the computation reads the version it computes, even if a load commits meanwhile."""

SYMBOLS_PER_QUERY = 200
"""A query of the computation covers this many symbols: a loader waiting for the API to let
go of the file waits for one such query (tens of milliseconds), never for the whole set."""

RETRY_SECONDS = 1.0
"""After a failed computation (the file busy with a loader), how long to wait before the next."""


class FactorCache:
    """The steps of the current data version: all symbols' once computed, before that the
    symbols asked so far (LRU-bounded)."""

    def __init__(self, run: Run, max_entries: int = 2048) -> None:
        self._run = run
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._version: str | None = None
        self._all: dict[str, FactorSteps] | None = None
        self._some: OrderedDict[str, FactorSteps] = OrderedDict()
        self._building: tuple[str | None] | None = None
        """The version being computed, if any (a tuple: ``None`` is a version too)."""
        self._retry_at = 0.0

    def get(self, cur: duckdb.DuckDBPyConnection, symbol: str, version: str | None) -> FactorSteps:
        """``symbol``'s steps under ``version`` (the version the answer is computed under)."""
        with self._lock:
            if version != self._version:
                self._switch(version)
            if self._all is not None:
                return self._all.get(symbol, NO_STEPS)
            steps = self._some.get(symbol)
            if steps is not None:
                self._some.move_to_end(symbol)
                return steps
            self._start_build()
        steps = queries.factor_steps(cur, symbol)
        with self._lock:
            if version == self._version and self._all is None:
                self._some[symbol] = steps
                while len(self._some) > self.max_entries:
                    self._some.popitem(last=False)
        return steps

    def many(
        self, cur: duckdb.DuckDBPyConnection, symbols: Sequence[str] | None, version: str | None
    ) -> dict[str, FactorSteps]:
        """The steps of ``symbols`` (sorted; None: every symbol) with events under ``version``:
        from memory once every symbol's are, else in one query on ``cur`` (and every symbol's
        computation started, as ``get`` does)."""
        with self._lock:
            if version != self._version:
                self._switch(version)
            every = self._all
            if every is None:
                self._start_build()
        if every is None:
            return steps_of(cur, symbols)
        if symbols is None:
            return every
        return {symbol: every[symbol] for symbol in symbols if symbol in every}

    def follow(self, version: str | None) -> None:
        """The data version changed (or not): drop the old steps; if adjusted questions were
        asked under the old version, compute the new version's now."""
        with self._lock:
            if version == self._version:
                return
            asked = self._all is not None or bool(self._some) or self._building is not None
            self._switch(version)
            if asked:
                self._start_build()

    @property
    def complete(self) -> bool:
        """Whether every symbol's steps of the current version are in memory."""
        with self._lock:
            return self._all is not None

    def _switch(self, version: str | None) -> None:
        self._version, self._all = version, None
        self._some.clear()
        self._retry_at = 0.0

    def _start_build(self) -> None:
        """Start computing every symbol's steps for the current version (lock held)."""
        if self._building == (self._version,) or time.monotonic() < self._retry_at:
            return
        version = self._version
        self._building = (version,)
        threading.Thread(
            target=self._build, args=(version,), name="market-api-factors", daemon=True
        ).start()

    def _build(self, version: str | None) -> None:
        try:
            steps = self._compute(version)
        except Exception as exc:  # the file is busy or was replaced: answers go on per symbol
            log.info("adjustment factors of data version %s not computed: %s", version, exc)
            with self._lock:
                self._retry_at = time.monotonic() + RETRY_SECONDS
            steps = None
        with self._lock:
            if self._building == (version,):
                self._building = None
            if steps is not None and version == self._version:
                self._all = steps
                self._some.clear()

    def _compute(self, version: str | None) -> dict[str, FactorSteps] | None:
        """Every symbol's steps, or None if the version changed on the way."""
        symbols: list[str] = self._run(version, queries.action_symbols)
        steps: dict[str, FactorSteps] = {}
        for start in range(0, len(symbols), SYMBOLS_PER_QUERY):
            if version != self._version:
                return None
            chunk = symbols[start : start + SYMBOLS_PER_QUERY]
            first, last = chunk[0], chunk[-1]
            part = self._run(version, lambda cur: queries.factor_steps_between(cur, first, last))  # noqa: B023
            steps.update(part)
        return steps


def steps_of(
    cur: duckdb.DuckDBPyConnection, symbols: Sequence[str] | None
) -> dict[str, FactorSteps]:
    """The steps of ``symbols`` (sorted; None: every symbol) with events, in one query."""
    if symbols is None:
        return queries.factor_steps_between(cur, "", "\U0010ffff")
    if not symbols:
        return {}
    found = queries.factor_steps_between(cur, symbols[0], symbols[-1])
    return {symbol: found[symbol] for symbol in symbols if symbol in found}
