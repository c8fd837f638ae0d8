"""The Alpha Vantage calls used and left in the key's day window, as the pipeline last counted
them: the pipeline writes the record after each run that called the vendor, the API's metrics
read it. A file, so neither side imports the other (docs/metrics.md, "Alpha Vantage calls").
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from market_core.atomic import write_text_atomic
from market_core.home import DataHome

RECORD_NAME = "alpha-vantage-calls.json"


@dataclass(frozen=True)
class CallsToday:
    """``used`` of ``limit`` calls (``ALPHAVANTAGE_REQUESTS_PER_DAY``) in the limiter's day
    window (24 hours, rolling) as counted at ``at`` (Unix seconds)."""

    used: int
    limit: int
    at: float

    @property
    def left(self) -> int:
        return max(0, self.limit - self.used)


def record_path(home: DataHome) -> Path:
    """In the shared folder when there is one (every machine's API reads it), else the data
    home's state folder."""
    return (home.shared or home.root) / "state" / RECORD_NAME


def write(home: DataHome, calls: CallsToday) -> None:
    path = record_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(asdict(calls)) + "\n")


def read(home: DataHome) -> CallsToday | None:
    """The last record, or ``None`` before any run called Alpha Vantage with a key (or when the
    file is unreadable: a metric goes missing rather than the scrape failing)."""
    try:
        raw = json.loads(record_path(home).read_text(encoding="utf-8"))
        return CallsToday(int(raw["used"]), int(raw["limit"]), float(raw["at"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
