"""The run's side of a lost Celery worker: each step's task is watched until it ends.

Celery acknowledges a step's message as the step starts (early acks, and no prefetch), so a
worker that dies takes its running step with it and Redis has nothing to hand back. The run
that sent the step knows which worker holds it (``task_track_started``) and asks the workers
who is alive; it sends the step again when its worker stops answering, and fails the step,
naming the worker, when none is left. Why not late acks: docs/several-machines.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from celery import Celery, states
from celery.exceptions import BackendError, WorkerLostError
from celery.result import AsyncResult
from kombu.exceptions import ChannelError, OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

PING_EVERY_SECONDS = 2.0
PING_TIMEOUT_SECONDS = 1.0
LOST_AFTER_SECONDS = 15.0
"""A worker that answered no ping for this long is lost (its main process answers even while
every pool process runs a step)."""
WORKERLESS_SECONDS = 60.0
"""With no worker answering for this long, the steps still waiting fail."""
UNREACHABLE_SECONDS = 120.0
"""The broker or result backend unreachable for this long fails the steps still waiting."""
STRANDED_AFTER_SECONDS = 10.0
"""A step that no queue and no worker holds for this long was lost (a Redis restart without
persistence drops its message; a worker restarted under the same name forgets it); it is sent
again."""
CHECK_EVERY_SECONDS = 5.0
"""How often the queue and the workers are asked whether they hold a step (a broadcast)."""
QUEUE = "dagster"

UNREACHABLE = (OperationalError, BackendError, RedisConnectionError, RedisTimeoutError, OSError)


class StepLostError(RuntimeError):
    """A step's worker, or every worker, or the broker, was gone for longer than the bounds."""


@dataclass
class Workers:
    """Which workers answered Celery's ping, and when; asked at most every ``PING_EVERY_SECONDS``.

    Shared by the steps of one run, so a run pings once however many steps it waits on."""

    app: Celery
    clock: Callable[[], float] = time.monotonic
    seen: dict[str, float] = field(default_factory=dict)
    started: float = field(init=False)
    asked: float = field(default=float("-inf"))
    unreachable_since: float | None = None
    last_answer: float = field(init=False)

    def __post_init__(self) -> None:
        self.started = self.last_answer = self.clock()

    def refresh(self) -> None:
        now = self.clock()
        if now - self.asked < PING_EVERY_SECONDS:
            return
        self.asked = now
        try:
            replies = self.app.control.ping(timeout=PING_TIMEOUT_SECONDS)
        except UNREACHABLE:
            self.unreachable(now)
            return
        self.reached()
        answered = self.clock()
        for reply in replies:
            for name in reply:
                self.seen[name] = answered
        if replies:
            self.last_answer = answered

    def unreachable(self, now: float) -> None:
        if self.unreachable_since is None:
            self.unreachable_since = now

    def reached(self) -> None:
        self.unreachable_since = None

    def unreachable_for(self) -> float:
        return 0.0 if self.unreachable_since is None else self.clock() - self.unreachable_since

    def lost(self, name: str) -> bool:
        """``name`` stopped answering (a worker never seen counts from the run's start)."""
        if self.unreachable_since is not None:
            return False  # the broker is down, not necessarily the worker
        return self.clock() - self.seen.get(name, self.started) >= LOST_AFTER_SECONDS

    def alive(self) -> list[str]:
        now = self.clock()
        return sorted(n for n, t in self.seen.items() if now - t < LOST_AFTER_SECONDS)

    def workerless_for(self) -> float:
        if self.unreachable_since is not None or self.alive():
            return 0.0
        return self.clock() - self.last_answer

    def gone(self) -> list[str]:
        return sorted(n for n in self.seen if self.lost(n))

    def holders(self, task_id: str) -> tuple[set[str], bool] | None:
        """Which workers answered whether they hold the task (running, or taken and about to
        start), and whether one does; None when the broker cannot be reached."""
        try:
            replies = self.app.control.inspect(timeout=PING_TIMEOUT_SECONDS).query_task(task_id)
        except UNREACHABLE:
            self.unreachable(self.clock())
            return None
        replies = replies or {}
        return set(replies), any(task_id in (reply or {}) for reply in replies.values())

    def queued(self) -> int | None:
        """Messages waiting in the steps' queue (every priority), or None when unreachable."""
        try:
            with self.app.connection_for_read() as conn:
                return int(conn.default_channel.queue_declare(QUEUE, passive=True).message_count)
        except ChannelError:  # no such queue: Redis restarted empty, and nobody declared it yet
            return 0
        except UNREACHABLE:
            self.unreachable(self.clock())
            return None


Report = Callable[[str], None]


@dataclass
class WatchedStep:
    """What dagster-celery's loop waits on for one step: ``ready``, ``get``, ``revoke``.

    ``send`` puts the step on the queue and returns its Celery result; it is called again when
    the step has to go to another worker. ``report`` writes a line into the run's log."""

    step_key: str
    send: Callable[[], AsyncResult]
    workers: Workers
    report: Report
    result: AsyncResult | None = None
    failure: str | None = None
    sends: int = 0
    stranded_since: float | None = None
    checked: float = float("-inf")
    send_failed_since: float | None = None

    def __post_init__(self) -> None:
        self._send("")

    def _send(self, why: str) -> None:
        try:
            self.result = self.send()
        except UNREACHABLE as exc:
            now = self.workers.clock()
            self.send_failed_since = self.send_failed_since or now
            self.workers.unreachable(now)
            if now - self.send_failed_since >= UNREACHABLE_SECONDS:
                self._fail(
                    f"step {self.step_key}: the Celery broker could not be reached for "
                    f"{UNREACHABLE_SECONDS:.0f} s to send it ({type(exc).__name__})"
                )
            return
        self.send_failed_since = None
        self.sends += 1
        self.stranded_since = None
        self.checked = self.workers.clock()  # give the new message time to be taken
        if why:
            self.report(f"step {self.step_key} sent again (attempt {self.sends}): {why}")

    def _fail(self, message: str) -> None:
        self.failure = message
        self.report(message)

    def ready(self) -> bool:
        if self.failure is not None:
            return True
        if self.result is None:  # never sent: the broker was down
            self._send("the broker is reachable again")
            return self.failure is not None
        try:
            state = self.result.state
            info = self.result.info
        except UNREACHABLE:
            return self._unreachable()
        self.workers.reached()
        if state in states.READY_STATES:
            if state == states.FAILURE and isinstance(info, WorkerLostError):
                self._send(f"the worker process running it died ({info})")
                return False
            return True
        self.workers.refresh()
        if self.workers.unreachable_since is not None:
            return self._unreachable()
        if state == states.STARTED and isinstance(info, dict):
            self._watch_holder(str(info.get("hostname", "")))
        else:
            self._watch_queued()
        return self.failure is not None

    def _unreachable(self) -> bool:
        self.workers.unreachable(self.workers.clock())
        down = self.workers.unreachable_for()
        if down >= UNREACHABLE_SECONDS:
            self._fail(
                f"step {self.step_key}: the Celery broker or result backend "
                f"(MARKET_CELERY_BROKER_URL) was unreachable for {down:.0f} s"
            )
        return self.failure is not None

    def _watch_holder(self, holder: str) -> None:
        if holder and self.workers.lost(holder):
            if self.workers.alive():
                self._send(f"Celery worker {holder} stopped answering while running it")
            elif self.workers.workerless_for() >= WORKERLESS_SECONDS:
                self._fail(self._no_worker_left([holder]))
            return
        self._watch_stranded({holder} if holder else set(self.workers.alive()), queued=False)

    def _watch_queued(self) -> None:
        if self.workers.workerless_for() >= WORKERLESS_SECONDS:
            self._fail(self._no_worker_left(self.workers.gone()))
        elif self.workers.alive():
            self._watch_stranded(set(self.workers.alive()), queued=True)

    def _watch_stranded(self, must_answer: set[str], queued: bool) -> None:
        """Send the step again once, for ``STRANDED_AFTER_SECONDS``, the queue has been empty
        (when it may hold the step) and every worker in ``must_answer`` said it does not hold
        it: a worker restarted under the same name forgets its step, and Redis restarted
        without its data loses the queue. A worker that does not answer proves nothing (the
        loss bound covers it). Asked every ``CHECK_EVERY_SECONDS``."""
        assert self.result is not None
        now = self.workers.clock()
        if now - self.checked < CHECK_EVERY_SECONDS:
            return
        self.checked = now
        found = (
            None if queued and self.workers.queued() != 0 else self.workers.holders(self.result.id)
        )
        if found is None or found[1] or not must_answer <= found[0]:
            self.stranded_since = None
        elif self.stranded_since is None:
            self.stranded_since = now
        elif now - self.stranded_since >= STRANDED_AFTER_SECONDS:
            self._send("no queue and no worker held it (a worker restarted, or Redis lost it)")

    def _no_worker_left(self, lost: list[str]) -> str:
        names = ", ".join(lost) or "none had answered"
        return (
            f"step {self.step_key}: no Celery worker answered for {WORKERLESS_SECONDS:.0f} s "
            f"(lost: {names}); start one with `make worker`, then `make retry-failed` loads "
            "the symbols this run did not"
        )

    def get(self) -> Any:
        if self.failure is not None:
            raise StepLostError(self.failure)
        assert self.result is not None
        return self.result.get()

    def revoke(self) -> None:
        if self.result is not None:
            self.result.revoke()
