"""Fixtures of the reliability suite (the shared ones are in tests/conftest.py)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.reliability.leaks import leaks


@dataclass(frozen=True)
class Traces:
    """Everything a test run wrote besides files: log records (from DEBUG up), stdout, stderr."""

    caplog: pytest.LogCaptureFixture
    capfd: pytest.CaptureFixture[str]

    @property
    def logs(self) -> str:
        return self.caplog.text

    def leaks(self, secret: str, root: Path, **texts: str) -> list[str]:
        """Where the secret shows: logs, stdout/stderr, the given texts, any file under root."""
        return leaks(secret, root, self.capfd.readouterr(), logs=self.caplog.text, **texts)


@pytest.fixture
def traces(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> Traces:
    caplog.set_level(logging.DEBUG)
    return Traces(caplog, capfd)
