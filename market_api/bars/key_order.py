"""Bars put in key order, (symbol, timestamp), after a query that read them without ``ORDER BY``.

A span of whole symbols is read as stored (DuckDB keeps a scan's insertion order), which for a
store loaded symbol by symbol is already key order; sorting it in the query cost as much again
as the scan. Any store may hold its rows otherwise (daily increments appended after the history,
a backfill, symbols loaded in any order, a join or a ``GROUP BY`` in the query), so the order is
checked here, in one vectorized pass, and the rows sorted only when it fails. bench/FINDINGS.md
("Bulk reads") has the figures.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_KEY_BITS = 62
"""A symbol's rank and a bar's offset in time packed in one int64 sort key when they fit."""


def in_key_order(table: pa.Table) -> pa.Table:
    """``table`` (columns ``symbol`` and ``timestamp``, keys unique) in key order: itself when it
    already is, else its rows taken in that order."""
    if table.num_rows < 2 or is_key_ordered(table):
        return table
    return table.take(key_order(table))


def is_key_ordered(table: pa.Table) -> bool:
    """Whether each row's key is greater than the one before it."""
    symbol, moment = table.column("symbol"), table.column("timestamp")
    count = table.num_rows
    symbol_before, symbol_after = symbol.slice(0, count - 1), symbol.slice(1)
    later = pc.less(moment.slice(0, count - 1), moment.slice(1))
    same = pc.equal(symbol_before, symbol_after)
    ordered = pc.or_(pc.less(symbol_before, symbol_after), pc.and_(same, later))
    return bool(pc.all(ordered).as_py())


def key_order(table: pa.Table) -> np.ndarray:
    """The row indices of ``table`` in key order. A stable sort of one int64 key (timsort: the
    sorted runs a store's appends leave are merged, not sorted again)."""
    encoded = pc.dictionary_encode(table.column("symbol")).combine_chunks()
    names = encoded.dictionary
    rank = np.empty(len(names), dtype=np.int64)
    rank[pc.sort_indices(names).to_numpy()] = np.arange(len(names), dtype=np.int64)
    symbols = rank[encoded.indices.to_numpy(zero_copy_only=False)]
    moments = _integers(table.column("timestamp"))
    low = int(moments.min())
    width = int(moments.max()) - low + 1
    if width.bit_length() + max(len(names) - 1, 1).bit_length() <= _KEY_BITS:
        key = symbols * width + (moments - low)
        return np.argsort(key, kind="stable")
    return np.lexsort((moments, symbols))


def _integers(column: pa.ChunkedArray) -> np.ndarray:
    """A date or timestamp column as its int64 storage (days or units since the epoch)."""
    storage = pa.int32() if pa.types.is_date32(column.type) else pa.int64()
    values = column.combine_chunks().view(storage).to_numpy(zero_copy_only=False)
    return values.astype(np.int64, copy=False)
