"""How ``semsearch serve`` holds connections: idle sockets are cheap and closed, requests are bounded.

uvicorn's own ``limit_concurrency`` counts open *connections*, so a client that opens a thousand
sockets and sends nothing makes the server answer every other client 503 until they go. Here the
bound is on what costs something, requests in flight (:class:`InFlightLimit`: past the limit a
request gets 503 with ``Retry-After: 1``), and a connection that sends nothing is closed after the
keep-alive timeout (:class:`IdleClosingH11Protocol`: the timer uvicorn starts only after a first
response is started as soon as the connection opens, and stopped, as uvicorn does, when data
arrives). Headers over 64 KiB in all get 431 (h11's own limit holds only while they are
incomplete); a client that trickles its body is cut off by ``BodyLimit`` (``search.http``).
"""

from __future__ import annotations

import json

from uvicorn.protocols.http.h11_impl import H11Protocol


class IdleClosingH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, with the keep-alive timer armed when a connection opens."""

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)


HEADER_BYTES = 64 * 1024  # a request's headers, all together


async def _refuse(send, status: int, message: str, headers: list | None = None) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class InFlightLimit:
    """ASGI middleware: at most ``limit`` HTTP requests answered at once (more get 503), and none
    whose headers add up to more than ``header_bytes`` (431: h11 refuses a header block over its
    limit only while it is incomplete, so one that arrives in a single read would pass)."""

    def __init__(self, app, limit: int, header_bytes: int = HEADER_BYTES):
        self.app = app
        self.limit = limit
        self.header_bytes = header_bytes
        self.in_flight = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if sum(len(k) + len(v) + 4 for k, v in scope.get("headers") or []) > self.header_bytes:
            return await _refuse(send, 431, f"the request headers are over {self.header_bytes // 1024} KiB")
        if self.in_flight >= self.limit:
            return await _refuse(send, 503, f"the server is answering {self.limit} requests already "
                                            "(--max-connections); try again", [(b"retry-after", b"1")])
        self.in_flight += 1
        try:
            return await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
