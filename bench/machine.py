"""What the figures were measured on: machine, versions, date, commit."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import shutil
import subprocess
from typing import Any

from bench.harness import BENCH_DIR

PACKAGES = ("duckdb", "polars", "pyarrow", "pandas", "dagster", "litestar", "msgspec", "granian",
            "fastapi", "uvicorn", "uvloop", "httptools", "pydantic")  # fmt: skip


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return float("nan")
    return round(pages / 2**30, 1)


def _command(*argv: str) -> str:
    if shutil.which(argv[0]) is None:
        return "not installed"
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else ""


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def describe() -> dict[str, Any]:
    commit = _command("git", "-C", str(BENCH_DIR.parent), "rev-parse", "--short", "HEAD")
    dirty = _command("git", "-C", str(BENCH_DIR.parent), "status", "--porcelain", "--", ".")
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": commit + (" (with uncommitted changes)" if dirty else ""),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "wrk": _command("wrk", "-v"),
        "packages": {name: _version(name) for name in PACKAGES},
    }
