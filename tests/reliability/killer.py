"""Start a ``writer_process`` and ``kill -9`` it at a chosen moment."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time

from tests.reliability.processes import REPO, clean_env

STARTUP_SECONDS = 120.0  # imports and the clean files, on a slow CI box


class WorkerGone(RuntimeError):
    """The worker ended (or went silent) before saying what was expected."""


class Worker:
    """A ``writer_process`` whose stdout lines arrive with the time they were read."""

    def __init__(self, *args: object) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.reliability.writer_process", *map(str, args)],
            cwd=REPO, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        self.lines: list[str] = []
        self._arrivals: queue.Queue[tuple[float, str | None]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._arrivals.put((time.monotonic(), line.rstrip("\n")))
        self._arrivals.put((time.monotonic(), None))

    def wait_for(self, word: str, timeout: float = STARTUP_SECONDS) -> float:
        """The moment the worker printed ``word``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                at, line = self._arrivals.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise WorkerGone(f"no {word!r} within {timeout}s: {self.lines[-5:]}") from None
            if line is None:
                raise WorkerGone(f"exited before {word!r}: {self.lines[-20:]}")
            self.lines.append(line)
            if line == word:
                return at

    def kill(self) -> bool:
        """``kill -9``; True if the worker was still running when the signal hit it."""
        alive = self.proc.poll() is None
        if alive:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        return alive and self.proc.returncode == -signal.SIGKILL

    def finish(self, timeout: float = STARTUP_SECONDS) -> int:
        """Let the worker run to its end; its exit code."""
        self.wait_for("done", timeout)
        return self.proc.wait(timeout=timeout)
