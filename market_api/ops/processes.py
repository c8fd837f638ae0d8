"""Where several granian workers put their metrics so that a scrape sums them all
(``prometheus_client``'s multiprocess mode; docs/metrics.md, "Several workers").

Imports no ``prometheus_client``: the library picks its mode from ``PROMETHEUS_MULTIPROC_DIR``
when it is first imported, so this runs before it is."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from market_api.ops.facts import StoreFacts
from market_api.ops.tally import Traffic
from market_api.settings import Settings

if TYPE_CHECKING:
    from market_api.ops.metrics import Metrics

log = logging.getLogger(__name__)

MULTIPROC_VAR = "PROMETHEUS_MULTIPROC_DIR"
_PREFIX = "server-"


def multiprocess_dir(settings: Settings) -> Path | None:
    """The folder this worker shares with its siblings, or ``None`` with one worker.

    ``PROMETHEUS_MULTIPROC_DIR``, when set, is the operator's (who empties it before a start);
    otherwise one folder per granian server under the data home's ``state/metrics``, named by
    the server's pid and start time, so a restart never adds to the last server's counts."""
    given = os.environ.get(MULTIPROC_VAR, "").strip()
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        return path
    if settings.workers <= 1:
        return None
    if "prometheus_client" in sys.modules:  # too late to choose its mode in this process
        log.warning(
            "metrics: prometheus_client was imported before the app was built; each of the %d "
            "workers reports only its own requests (set %s before starting granian)",
            settings.workers,
            MULTIPROC_VAR,
        )
        return None
    server = os.getppid()
    root = settings.home.state_dir / "metrics"
    path = root / f"{_PREFIX}{server}-{_start_ticks(server)}"
    path.mkdir(parents=True, exist_ok=True)
    _remove_stale(root, path)
    os.environ[MULTIPROC_VAR] = str(path)
    return path


def _start_ticks(pid: int) -> str:
    """When process ``pid`` started (Linux: clock ticks since boot), so a reused pid is told
    apart; ``0`` where ``/proc`` is missing."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "0"
    return stat.rsplit(")", 1)[-1].split()[19]


def _remove_stale(root: Path, keep: Path) -> None:
    """Folders of servers that are gone."""
    for folder in root.glob(f"{_PREFIX}*"):
        if folder == keep:
            continue
        pid, _, started = folder.name.removeprefix(_PREFIX).partition("-")
        if pid.isdigit() and _start_ticks(int(pid)) == started:
            continue
        with contextlib.suppress(OSError):
            shutil.rmtree(folder)


def build_metrics(settings: Settings, traffic: Traffic, facts: StoreFacts) -> Metrics:
    """The worker's ``/metrics``: its multiprocess folder chosen first, then
    ``prometheus_client`` imported (``ops.metrics``), in that order."""
    multiproc = multiprocess_dir(settings)
    from market_api.ops.metrics import Metrics

    return Metrics(traffic, facts, settings.home, multiproc)
