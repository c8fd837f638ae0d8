"""Pretend machines for the cluster tests: processes whose data homes share nothing.

Each "machine" is a child process with a data home of its own and no ``DAGSTER_HOME``; what the
machines share is only what the test hands every one of them (the three variables of the
multi-machine mode). ``Barrier`` lines their starts up, so that "at once" means at once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODE_VARIABLES = ("MARKET_POSTGRES_URL", "MARKET_SHARED_HOME", "MARKET_CELERY_BROKER_URL")
PER_MACHINE = ("MARKET_DATA_HOME", "DAGSTER_HOME", "PGPASSWORD", "ALPHAVANTAGE_API_KEY")
BARRIER_TIMEOUT_SECONDS = 120.0


def machine_env(data_home: Path, shared: Mapping[str, str], **extra: str) -> dict[str, str]:
    """This process's environment, less anything of another machine, plus ``shared``."""
    base = {k: v for k, v in os.environ.items() if k not in (*MODE_VARIABLES, *PER_MACHINE)}
    path = os.pathsep.join(filter(None, [str(Path(sys.executable).parent), base.get("PATH")]))
    return {**base, **shared, "MARKET_DATA_HOME": str(data_home), "PATH": path, **extra}


@dataclass(frozen=True)
class Barrier:
    """A folder-based start line: each child announces itself, then waits for ``go``."""

    folder: Path

    def child_code(self, name: str) -> str:
        """Python lines a child runs before its real work (bounded like every wait here)."""
        return (
            "import pathlib, time\n"
            f"folder = pathlib.Path({str(self.folder)!r})\n"
            f"(folder / {name + '.ready'!r}).touch()\n"
            f"deadline = time.monotonic() + {BARRIER_TIMEOUT_SECONDS}\n"
            "while not (folder / 'go').exists():\n"
            "    assert time.monotonic() < deadline, 'the start line never opened'\n"
            "    time.sleep(0.01)\n"
        )

    def release_when_ready(self, count: int, children: list[subprocess.Popen[str]]) -> None:
        deadline = time.monotonic() + BARRIER_TIMEOUT_SECONDS
        while len(list(self.folder.glob("*.ready"))) < count:
            dead = [c for c in children if c.poll() is not None]
            assert not dead, f"a child died before the start line: {dead[0].communicate()}"
            assert time.monotonic() < deadline, "the children never reached the start line"
            time.sleep(0.02)
        (self.folder / "go").touch()


@contextmanager
def children() -> Iterator[list[subprocess.Popen[str]]]:
    """Child processes that are killed, if still running, however the test ends."""
    started: list[subprocess.Popen[str]] = []
    try:
        yield started
    finally:
        for child in started:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=10)


def python(code: str, env: Mapping[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finished(child: subprocess.Popen[str], timeout: float) -> str:
    """The child's output once it exited 0; its errors in the failure otherwise."""
    out, err = child.communicate(timeout=timeout)
    assert child.returncode == 0, f"exit {child.returncode}\n{out}\n{err}"
    return out
