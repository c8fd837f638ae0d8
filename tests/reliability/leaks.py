"""Find a secret anywhere a run could have put it.

A byte grep is not enough: Parquet pages are zstd-compressed, DuckDB compresses and
dictionary-encodes strings, and Dagster zlib-compresses the snapshots in its SQLite run storage.
So every file is searched as bytes *and*, when it is one of those formats, through its decoded
contents. The secret is looked for as sent and URL-encoded (the form a request line or a URL in
an exception carries).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import zlib
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote, quote_plus

import duckdb
import polars as pl

SQLITE_MAGIC = b"SQLite format 3\x00"
DUCKDB_MAGIC = b"DUCK"  # at offset 8 of a DuckDB file


def secret_forms(secret: str) -> set[str]:
    return {secret, quote(secret, safe=""), quote_plus(secret)}


def _contains(text: str | bytes, forms: set[str]) -> bool:
    if isinstance(text, bytes):
        return any(form.encode() in text for form in forms)
    return any(form in text for form in forms)


def _parquet_text(path: Path) -> str:
    return json.dumps(pl.read_parquet(path).to_dicts(), default=str)


def _duckdb_hits(path: Path, forms: set[str]) -> list[str]:
    hits = []
    with duckdb.connect(str(path), read_only=True) as conn:
        columns = conn.execute(
            "SELECT table_schema, table_name, column_name FROM information_schema.columns"
        ).fetchall()
        for schema, table, column in columns:
            for form in forms:
                sql = (f'SELECT count(*) FROM "{schema}"."{table}" '
                       f'WHERE contains(CAST("{column}" AS VARCHAR), ?)')  # fmt: skip
                if conn.execute(sql, [form]).fetchall()[0][0]:
                    hits.append(f"{path} (DuckDB {table}.{column})")
    return hits


def _sqlite_values(path: Path) -> Iterable[tuple[str, object]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                for value in row:
                    yield table, value
    finally:
        conn.close()


def _sqlite_hits(path: Path, forms: set[str]) -> list[str]:
    hits = []
    for table, value in _sqlite_values(path):
        texts: list[str | bytes] = []
        if isinstance(value, str | bytes):
            texts.append(value)
        if isinstance(value, bytes):
            with contextlib.suppress(zlib.error):
                texts.append(zlib.decompress(value))
        if any(_contains(t, forms) for t in texts):
            hits.append(f"{path} (SQLite table {table})")
    return hits


def _decoded_hits(path: Path, head: bytes, forms: set[str]) -> list[str]:
    if path.suffix == ".parquet" and head.startswith(b"PAR1"):
        return [f"{path} (Parquet contents)"] if _contains(_parquet_text(path), forms) else []
    if head.startswith(SQLITE_MAGIC):
        return _sqlite_hits(path, forms)
    if head[8:12] == DUCKDB_MAGIC:
        return _duckdb_hits(path, forms)
    return []


def places_with_secret(root: Path, secret: str) -> list[str]:
    """Every file under ``root`` (bytes or decoded contents) that holds the secret."""
    forms = secret_forms(secret)
    hits = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if _contains(data, forms):
            hits.append(f"{path} (bytes)")
        hits += _decoded_hits(path, data[:16], forms)
    return hits


def texts_with_secret(secret: str, **texts: str) -> list[str]:
    """The names of the given texts (logs, stdout, error messages) that hold the secret."""
    forms = secret_forms(secret)
    return [name for name, text in texts.items() if _contains(text, forms)]


def leaks(secret: str, root: Path, out_err: tuple[str, str], **texts: str) -> list[str]:
    """Everywhere the secret shows: the named texts, stdout/stderr and every file under root."""
    out, err = out_err
    return texts_with_secret(secret, stdout=out, stderr=err, **texts) + places_with_secret(
        root, secret
    )
