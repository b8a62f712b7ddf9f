"""Servers for the tests: ``semsearch serve``'s app in this process on a free loopback port.

Used by ``tests/test_service.py`` and ``tests/test_hostile.py``; every address is 127.0.0.1.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

from search import service


def wait_until(predicate, deadline: float = 120.0, what: str = "condition"):
    until = time.monotonic() + deadline
    while time.monotonic() < until:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@contextmanager
def serving(index: Path, **settings):
    """A server for ``index`` on a free loopback port; yields its base URL (ready to answer)."""
    import uvicorn

    app = service.create_app(service.Settings(index=index, **settings))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, what="the server to start")
        port = server.servers[0].sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        yield url, app
    finally:
        server.should_exit = True
        thread.join(30)


def ready(url: str) -> None:
    wait_until(lambda: httpx.get(f"{url}/health").status_code == 200, what="/health to say ready")
