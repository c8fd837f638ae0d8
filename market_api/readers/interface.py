"""The API's one read interface: every question reaches the store through a ``Reader``.

Two implementations: ``file.FileReader`` (the data home's DuckDB file) and ``lake.LakeReader``
(the shared DuckLake). Callers never ask which one they hold; what only the lake can do (read
an older snapshot) is a method both answer.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Protocol, TypeVar

import duckdb

from market_core.store import StoreReader

T = TypeVar("T")

Query = Callable[[duckdb.DuckDBPyConnection], T]
"""A question in SQL: runs on a read-only cursor whose tables are those of one data version."""


class Reader(StoreReader, Protocol):
    """``market_core.store.StoreReader`` (``run``, ``data_version``, ``poll``, ``shutdown``)
    and what the API asks besides. Blocking methods: call them from a worker thread."""

    @property
    def is_open(self) -> bool:
        """Whether the store is held open right now (the file read-only, the lake attached)."""
        ...

    def run_at(self, version: str | None, query: Query[T], as_of: datetime | None = None) -> T:
        """``query`` on the data of ``version`` (a ``data_version``), so that every query of
        one answer reads the same data; with ``as_of``, on the data as it stood then, never
        newer than ``version``. A store that keeps only its latest data reads that.

        Raises ``StoreUnavailable`` when the store cannot be read in time, ``HistoryNotKept``
        or ``SnapshotNotFound`` for an ``as_of`` it cannot answer."""
        ...

    def check_as_of(self, as_of: datetime) -> None:
        """Raise ``HistoryNotKept`` unless this store can answer as of a past time."""
        ...

    def close(self) -> None:
        """Let go of the store once running queries end; the next query opens it again."""
        ...
