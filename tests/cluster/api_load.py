"""A bounded load on an API replica while something fails under it: two threads, one asking for
answers the replica has cached (hits), one for answers it has not (misses), until stopped."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import requests

REQUEST_TIMEOUT_SECONDS = 10.0
"""A request not answered by then counts as a hang (a miss during an outage is answered within
the catalog's connect timeout, 2 s, twice, at worst)."""


@dataclass(frozen=True)
class Answer:
    kind: str
    path: str
    started: float
    ended: float
    status: int | None
    retry_after: str | None = None
    body: str = ""
    failure: str = ""


@dataclass
class Load:
    """``hits`` asked in turn every 20 ms; ``miss`` (a format string of ``n``) every 50 ms."""

    base: str
    hits: Sequence[str]
    miss: str
    answers: list[Answer] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    guard: threading.Lock = field(default_factory=threading.Lock)

    def ask(self, kind: str, path: str) -> Answer:
        started = time.monotonic()
        try:
            response = requests.get(self.base + path, timeout=REQUEST_TIMEOUT_SECONDS)
        except requests.RequestException as exc:
            answer = Answer(kind, path, started, time.monotonic(), None, failure=repr(exc))
        else:
            answer = Answer(kind, path, started, time.monotonic(), response.status_code,
                            response.headers.get("retry-after"), response.text)  # fmt: skip
        with self.guard:
            self.answers.append(answer)
        return answer

    def ask_hits(self) -> None:
        n = 0
        while not self.stop.wait(0.02):
            self.ask("hit", self.hits[n % len(self.hits)])
            n += 1

    def ask_misses(self) -> None:
        n = 0
        while not self.stop.wait(0.05):
            n += 1
            self.ask("miss", self.miss.format(n=n))

    def of(self, kind: str, after: float = 0.0, before: float = float("inf")) -> list[Answer]:
        """The answers of ``kind`` to requests sent between ``after`` and ``before``."""
        with self.guard:
            return [a for a in self.answers if a.kind == kind and after <= a.started < before]


@contextlib.contextmanager
def running(load: Load) -> Iterator[Load]:
    threads = [
        threading.Thread(target=work, daemon=True) for work in (load.ask_hits, load.ask_misses)
    ]
    for thread in threads:
        thread.start()
    try:
        yield load
    finally:
        load.stop.set()
        for thread in threads:
            thread.join(timeout=REQUEST_TIMEOUT_SECONDS + 5)


def assert_no_5xx_but_503_with_retry_after(
    answers: Sequence[Answer], expected: frozenset[int] = frozenset({200, 503})
) -> None:
    """Every request answered in time, with an ``expected`` status; a 503 always with
    ``Retry-After`` and the API's error body naming the catalog."""
    hung = [a for a in answers if a.status is None]
    assert not hung, f"{len(hung)} requests got no answer in time, first: {hung[0]}"
    for answer in answers:
        assert answer.status in expected, answer
        if answer.status == 503:
            assert answer.retry_after is not None and int(answer.retry_after) >= 1, answer
            body = json.loads(answer.body)
            assert body["status_code"] == 503 and body["error"] == "data_unavailable", body
            assert "catalog" in body["detail"], body
