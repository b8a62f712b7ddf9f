"""A client for a running ``semsearch serve``: what ``semsearch query --server URL`` uses.

Plain ``urllib`` and ``json``, so that asking a server costs a process no
more than Python's start-up: no model, no index, no torch or FAISS.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Mapping, Sequence

from index.errors import SemsearchError

TIMEOUT_S = 60.0


class Client:
    def __init__(self, server: str, timeout: float = TIMEOUT_S):
        if not urllib.parse.urlparse(server).scheme in ("http", "https"):
            raise SemsearchError(f"--server {server!r}: expected a URL such as http://127.0.0.1:8000")
        self.server = server.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.server + path, data=data, method=method,
                                         headers={"Content-Type": "application/json", "Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read()).get("error") or exc.reason
            except (ValueError, AttributeError):
                message = exc.reason
            raise SemsearchError(f"server {self.server}: {message} (HTTP {exc.code})") from None
        except (urllib.error.URLError, socket.timeout, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            raise SemsearchError(f"cannot reach the semsearch server at {self.server}: {reason}") from None

    def search(self, query: str, k: int = 10, where: Mapping[str, Any] | None = None) -> list[dict]:
        params = [("q", query), ("k", str(k))] + ([("where", json.dumps(where))] if where else [])
        return self._call("GET", "/search?" + urllib.parse.urlencode(params))["hits"]

    def search_many(self, queries: Sequence[str], k: int = 10,
                    where: Mapping[str, Any] | Sequence[Mapping[str, Any] | None] | None = None) -> list[dict]:
        """One entry per query, in order: ``{"query", "hits"}`` or ``{"query", "error"}``. ``where``:
        one filter for all, or a list with each query's own (one request per distinct filter)."""
        wheres = list(where) if isinstance(where, (list, tuple)) else [where] * len(queries)
        groups: dict[str, list[int]] = {}
        for i, w in enumerate(wheres):
            groups.setdefault(json.dumps(w, sort_keys=True), []).append(i)
        out: list[dict] = [{}] * len(queries)
        for positions in groups.values():
            body = {"queries": [queries[i] for i in positions], "k": k, "where": wheres[positions[0]]}
            for i, result in zip(positions, self._call("POST", "/search", body)["results"]):
                out[i] = result
        return out

    def faq_answer(self, question: str) -> dict:
        return self._call("POST", "/faq/answer", {"question": question})
