"""``make worker``: this machine becomes a Celery worker for the runs of every machine sharing
``MARKET_CELERY_BROKER_URL``.

It checks the broker, opens the instance, writes Celery's config module, and then becomes
Celery's own worker (``os.execve``): the process ``make`` started is the worker, so SIGTERM and
Ctrl-C reach Celery itself (a warm shutdown), and the kernel sends it SIGTERM when its parent
dies, so a ``make`` killed with SIGKILL leaves no worker taking tasks. See
docs/design/operations-internals.md.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import signal
import sys
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NoReturn

from market_core.atomic import write_text_atomic
from market_core.home import DataHome
from market_pipeline.cli.serve import say
from market_pipeline.defs.executor import BROKER_VARIABLE, CELERY_SETTINGS

CELERY_APP = "dagster_celery.app"
CONFIG_MODULE = "dagster_celery_config"
"""The module ``dagster_celery.app`` imports, if found on the path, and applies to its conf."""
VENV_BIN = Path(sys.executable).parent  # not resolved: the venv's bin, not the base Python's
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class BrokerNotSet(RuntimeError):
    def __init__(self) -> None:
        super().__init__(
            f"{BROKER_VARIABLE} is not set: a worker takes its steps from a Celery broker; set it "
            "to the Redis every machine uses (e.g. redis://127.0.0.1:6379/0)"
        )


class ParentGone(RuntimeError):
    def __init__(self) -> None:
        super().__init__("the process that started the worker ended before it was up; not started")


def broker_url(env: Mapping[str, str]) -> str:
    url = env.get(BROKER_VARIABLE, "").strip()
    if not url:
        raise BrokerNotSet
    return url


def with_venv_path(env: Mapping[str, str]) -> dict[str, str]:
    """The venv's ``bin`` first on ``PATH``, for what is started by name (the Dagster CLIs)."""
    return {**env, "PATH": os.pathsep.join(filter(None, [str(VENV_BIN), env.get("PATH")]))}


def config_module(settings: Mapping[str, object]) -> str:
    """The text of ``dagster_celery_config.py``: ``settings`` and the broker, by variable.

    ``make_app`` applies every name ``dir()`` lists, so the module's ``__dir__`` lists the
    settings only (not ``os``, nor the module's own dunders)."""
    names = ["broker_url", "result_backend", *settings]
    return "\n".join(
        [
            f'"""Written by market_pipeline/cli/worker.py at each start: {CELERY_APP} imports it',
            "and applies what __dir__ lists. No URL here: the broker and the result backend are",
            f'{BROKER_VARIABLE}, read as the worker starts."""',
            "",
            "import os",
            "",
            f"broker_url = result_backend = os.environ[{BROKER_VARIABLE!r}].strip()",
            *(f"{name} = {value!r}" for name, value in settings.items()),
            "",
            "",
            "def __dir__() -> list[str]:",
            f"    return {names!r}",
            "",
        ]
    )


def write_worker_config(data_home: Path) -> Path:
    """``<data home>/celery/dagster_celery_config.py``, per machine; the folder goes on the
    worker's ``PYTHONPATH``."""
    path = data_home / "celery" / f"{CONFIG_MODULE}.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = config_module(CELERY_SETTINGS)
    if not path.exists() or path.read_text() != text:
        write_text_atomic(path, text)
    return path


def remove_url_configs(dagster_home: Path) -> None:
    """The config modules ``dagster-celery worker start`` left, one per start, under the Dagster
    home; they hold the broker URL, password included. Earlier versions of this command ran it."""
    shutil.rmtree(dagster_home / "dagster_celery" / "config", ignore_errors=True)


def celery_argv(name: str | None) -> list[str]:
    """Celery's worker; ``name`` becomes the node name ``<name>@<host>`` (default
    ``dagster-<random>``, as dagster-celery names its workers)."""
    node = f"{name or 'dagster-' + uuid.uuid4().hex[-6:]}@%h"
    command = [str(VENV_BIN / "celery"), "-A", CELERY_APP, "worker"]
    return [*command, "--loglevel", "INFO", "--hostname", node]


def celery_env(env: Mapping[str, str], config: Path, dagster_home: Path) -> dict[str, str]:
    """``env`` with the config module's folder first on ``PYTHONPATH`` and ``DAGSTER_HOME`` set
    (only make sets it)."""
    path = os.pathsep.join(filter(None, [str(config.parent), env.get("PYTHONPATH")]))
    return with_venv_path({**env, "PYTHONPATH": path, "DAGSTER_HOME": str(dagster_home)})


def die_with_parent(parent: int) -> None:
    """Have the kernel send SIGTERM to this process (and so to the worker it becomes) when its
    parent dies: a warm shutdown of Celery when ``make`` is killed with SIGKILL. Linux only;
    elsewhere nothing is done. ``ParentGone`` if the parent died before the request."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError, TypeError):  # not Linux: no prctl
        return
    if prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
        say(
            "worker",
            f"cannot ask for SIGTERM on its parent's death: {os.strerror(ctypes.get_errno())}",
        )
    if os.getppid() != parent:  # the parent died first: nobody will stop this worker
        raise ParentGone


def worker_command(name: str | None = None) -> list[str]:
    """How a supervisor starts what ``make worker`` runs, as its own child."""
    return [sys.executable, "-m", "market_pipeline.cli.worker", *(["--name", name] if name else [])]


def run_worker(name: str | None, parent: int) -> NoReturn:
    """Check the broker, open the instance (made if missing), write the config, exec Celery."""
    broker_url(os.environ)
    from market_pipeline.cli.instance import dagster_home, open_instance  # Dagster loads only now

    open_instance().dispose()  # exports PGPASSWORD from the URL for the worker, if needed
    home = dagster_home().resolve()
    remove_url_configs(home)
    config = write_worker_config(DataHome.from_env().root)
    argv = celery_argv(name)
    env = celery_env(os.environ, config, home)
    die_with_parent(parent)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(argv[0], argv, env)


def main(argv: Sequence[str] | None = None) -> int:
    parent = os.getppid()
    parser = argparse.ArgumentParser(
        prog="python -m market_pipeline.cli.worker", description=__doc__
    )
    parser.add_argument("--name", help="the Celery node name (default: dagster-<random>)")
    args = parser.parse_args(argv)
    try:
        run_worker(args.name, parent)
    except BrokerNotSet as exc:
        say("worker", str(exc))
        return 2
    except ParentGone as exc:
        say("worker", str(exc))
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
