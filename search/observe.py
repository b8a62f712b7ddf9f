"""Every request observed once: counted in the metrics and, when asked, logged as one line.

``Observe`` is an ASGI middleware (a plain one, so that a handler's wait for a client that
leaves is not disturbed) that times each HTTP request, takes its status from the response, and
names its route by the app's route template. Handlers add what only they know with ``note``
(the query's length, the hits returned); the middleware gives each request a fresh record of
its own. With ``--log-format json`` each request is one JSON object on standard error:
``route``, ``method``, ``status``, ``ms``, and, where they apply, ``query_chars``, ``queries``,
``hits`` (``text`` writes the same as one readable line). The query text itself is logged only
with ``--log-queries``.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from typing import Any

from starlette.routing import Match

from .metrics import Metrics

LOG_FORMATS = ("none", "text", "json")
_NOTES: contextvars.ContextVar[dict | None] = contextvars.ContextVar("semsearch_request_notes", default=None)
access = logging.getLogger("semsearch.requests")


def note(**fields: Any) -> None:
    """Add fields to the current request's log record (nothing outside a request)."""
    record = _NOTES.get()
    if record is not None:
        record.update(fields)


def request_logger(stream=None) -> logging.Logger:
    """The request log: one line per record on standard error (or ``stream``), not propagated."""
    if not getattr(access, "semsearch_configured", False):
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        access.addHandler(handler)
        access.setLevel(logging.INFO)
        access.propagate = False
        access.semsearch_configured = True
    return access


def log_line(record: dict[str, Any], log_format: str, log_queries: bool) -> str | None:
    """The line logged for one request (None when not logging)."""
    if log_format == "none":
        return None
    if not log_queries:
        record = {k: v for k, v in record.items() if k not in ("query", "queries_text")}
    if log_format == "json":
        return json.dumps(record, ensure_ascii=False)
    return " ".join(f"{k}={v}" for k, v in record.items())


class Observe:
    """The middleware: ``Observe(app, metrics=..., routes=..., log_format=..., log_queries=...)``."""

    def __init__(self, app, metrics: Metrics, routes: list, log_format: str = "none", log_queries: bool = False):
        self.app = app
        self.metrics = metrics
        self.routes = routes  # the app's routes (read at each request, so later routes count too)
        self.log_format = log_format
        self.log_queries = log_queries

    def route_of(self, scope) -> str:
        for route in self.routes:
            match, _ = route.matches(scope)
            if match != Match.NONE:
                return getattr(route, "path", None) or "other"
        return "other"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless a response starts
        record: dict[str, Any] = {}
        token = _NOTES.set(record)

        async def sending(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            _NOTES.reset(token)
            seconds = time.perf_counter() - started
            route, method = self.route_of(scope), scope.get("method", "")
            self.metrics.request(route, method, status, seconds)
            line = log_line({"route": route, "method": method, "status": status, "ms": round(seconds * 1000, 2),
                             **record}, self.log_format, self.log_queries)
            if line is not None:
                request_logger().info(line)
