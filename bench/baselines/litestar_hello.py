"""The framework's floor: a Litestar hello-world answering a fixed small JSON.

Served exactly as ours is (granian, ASGI, one worker), so the gap between the two is what our
code adds on top of the framework and the server.
"""

from __future__ import annotations

from litestar import Litestar, get


@get("/", sync_to_thread=False)
def hello() -> dict[str, str]:
    return {"hello": "world"}


@get("/health", sync_to_thread=False)
def health() -> dict[str, str]:
    return {"status": "ok"}


app = Litestar(route_handlers=[hello, health])
