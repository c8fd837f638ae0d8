"""The project's programs run as separate processes, with only the environment given."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ENV_VARS

REPO = Path(__file__).resolve().parents[2]


def clean_env(**env: str) -> dict[str, str]:
    """This process's environment without any of the project's variables, plus ``env``."""
    base = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    return {**base, **env}


def run_module(
    module: str, *args: str, env: dict[str, str], timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO, env=clean_env(**env), capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
