"""The HTTP plumbing shared by ``semsearch serve`` and its Ray Serve variant.

``ServiceError`` (a status and a message), the JSON error handlers (every error is
``{"error": ...}``; a 500 never carries exception text or paths, which go to the log),
``BodyLimit`` (a request body over the size limit is a 413, one that does not arrive in
time a 408), ``until_disconnected`` (work dropped when its client goes away) and
``parse_where`` (the ``where=`` filters of a query string, ``index.storage.filter_syntax``) and
``check_filter`` (a body's JSON filter): a bad filter is 422 naming its position;
``query_filters``: each query's filter of a POST /search body (``where`` and ``wheres``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from index.storage.filter_language import FilterError
from index.storage.filter_language import parse as parse_filter
from index.storage.filter_syntax import combine

from .limits import TooMuch

log = logging.getLogger("semsearch")


class ServiceError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def install_error_handlers(app: FastAPI) -> None:
    """Errors always as JSON ``{"error": ...}`` (and ``details`` for a malformed request), never a traceback."""

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError):
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(TooMuch)
    async def too_much(request: Request, exc: TooMuch):
        return JSONResponse({"error": str(exc)}, status_code=413)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        details = [{"where": ".".join(str(p) for p in e.get("loc", ())), "problem": e.get("msg", "")}
                   for e in exc.errors()]
        first = details[0] if details else {"where": "request", "problem": "invalid"}
        return JSONResponse({"error": f"{first['where']}: {first['problem']}", "details": details}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        # The details (and any paths in them) go to the server's log, never to the client.
        log.error("internal error answering %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"error": "internal error; the server log has the details"}, status_code=500)


async def until_disconnected(request: Request, work: asyncio.Future):
    """Await ``work``, cancelling it when the client goes away (its queued queries are dropped
    before they reach the model: the batcher skips cancelled items)."""
    async def watch():
        while not await request.is_disconnected():
            await asyncio.sleep(0.05)

    watcher = asyncio.ensure_future(watch())
    try:
        done, _ = await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if work not in done:
            work.cancel()
            raise ServiceError(499, "the client went away")
        return work.result()
    finally:
        watcher.cancel()


def parse_where(clauses: list[str]) -> dict[str, Any] | None:
    """``where=`` values of a query string (``lang=en``, ``year>=2021``, or a JSON filter), ANDed;
    a bad one is 422 naming where it goes wrong."""
    try:
        return combine(clauses, label="where")
    except FilterError as exc:
        raise ServiceError(422, str(exc)) from None


def check_filter(where: Any, label: str = "where") -> None:
    """A request body's JSON filter, checked before any work: 422 naming the position."""
    try:
        parse_filter(where, label)
    except FilterError as exc:
        raise ServiceError(422, str(exc)) from None


def query_filters(where: Any, wheres: list[Any] | None, n: int) -> list[dict[str, Any] | None]:
    """Each query's filter in a POST /search body: ``where`` (every query's) ANDed with its own
    ``wheres[i]`` (None: none of its own); 422 naming the position of a bad one."""
    check_filter(where)
    if wheres is None:
        return [where] * n
    if len(wheres) != n:
        raise ServiceError(422, f"wheres: {len(wheres)} filters for {n} queries (give one per query, null for none)")
    out = []
    for i, own in enumerate(wheres):
        check_filter(own, f"wheres[{i}]")
        parts = [f for f in (where, own) if f]
        out.append(None if not parts else parts[0] if len(parts) == 1 else {"$and": parts})
    return out


class BodyLimit:
    """Refuses a request body over ``limit`` bytes with 413, by its Content-Length or as it streams
    (the body is read here, up to the limit, and handed on whole)."""

    def __init__(self, app, limit: int, seconds: float = 30.0):
        self.app = app
        self.limit = limit
        self.seconds = seconds  # the whole body must arrive within this (a client trickling bytes is cut off)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self.refuse(send)
        chunks, size = [], 0
        deadline = asyncio.get_running_loop().time() + self.seconds
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - asyncio.get_running_loop().time()))
            except asyncio.TimeoutError:
                response = JSONResponse({"error": f"the request body did not arrive within {self.seconds:g} s"},
                                        status_code=408, headers={"Connection": "close"})
                return await response({"type": "http"}, None, send)
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return await self.refuse(send)
            if not message.get("more_body", False):
                break
        body, delivered = b"".join(chunks), False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def refuse(self, send) -> None:
        response = JSONResponse({"error": f"the request body is over {self.limit / (1024 * 1024):g} MB "
                                          "(start the server with a larger --max-body-mb)"}, status_code=413)
        await response({"type": "http"}, None, send)
