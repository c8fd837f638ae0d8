"""One way to run Schemathesis against a served API: every check, the push streams left out
(a valid request never ends), our hooks, two workers, a fixed seed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
HOOKS = Path(__file__).with_name("schemathesis_hooks.py")


def schemathesis(
    base: str, folder: Path, *options: str, max_examples: int, timeout: float
) -> tuple[int, str, int]:
    """The exit code, the end of the output, and how many test cases were generated."""
    done = subprocess.run(
        [str(SCHEMATHESIS), "run", f"{base}/schema/openapi.json", "--checks", "all",
         "--exclude-path-regex", "/stream$", *options,
         "--max-examples", str(max_examples), "--seed", "1", "--workers", "2", "--no-color",
         "--request-timeout", "30"],
        capture_output=True, text=True, timeout=timeout, cwd=folder,
        env={**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS)},
    )  # fmt: skip
    summary = done.stdout[-3000:]
    generated = summary.split(" generated")[0].rsplit(maxsplit=1)[-1]
    return done.returncode, summary, int(generated) if generated.isdigit() else 0
