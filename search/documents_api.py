"""Reading documents back over HTTP: ``GET /documents/{id}`` and ``GET /documents`` (paged).

Both read the index folder through ``Index.get``/``Index.documents`` (``index.storage.listing``:
a read connection of their own, one committed snapshot), on the default thread pool, so they
neither wait for the model nor disturb the workers' snapshots. A page holds at most
``MAX_PAGE`` documents, and a response over ``--max-response-bytes`` is refused (413: ask for a
smaller page); ``next_after`` is the id to pass as ``after`` for the next page (None at the end).
Like search results, reading needs no token.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Callable

from fastapi import FastAPI, Query

from index.errors import SemsearchError
from index.indexer import Index

from . import api_models as m
from .http import ServiceError, parse_where

MAX_PAGE = 1000


def add_routes(app: FastAPI, folder: Path, respond: Callable[[Any], Any]) -> None:
    """Add the two GET routes for the index at ``folder``; ``respond`` makes the JSON response
    (the service's, which refuses one over ``--max-response-bytes`` with 413)."""

    def run(work):
        try:
            with Index.open(folder) as index:
                return work(index)
        except SemsearchError as exc:
            raise ServiceError(400, str(exc)) from None

    @app.get("/documents/{doc_id:path}", tags=["index"], responses={**m.ERRORS, 404: {"model": m.Error}})
    async def get_document(doc_id: str):
        """One stored document: id, text, metadata, created_at, updated_at."""
        found = await asyncio.get_running_loop().run_in_executor(None, run, lambda ix: ix.get([doc_id]))
        if not found:
            raise ServiceError(404, f"no document {doc_id!r} in the index")
        return respond(found[0].as_dict())

    @app.get("/documents", tags=["index"], responses=m.ERRORS)
    async def list_documents(
        limit: int = Query(100, ge=0, le=MAX_PAGE, description="Documents in this page."),
        offset: int = Query(0, ge=0, description="Documents to skip first, in id order."),
        after: str | None = Query(None, description="Start after this id (the previous page's next_after)."),
        where: list[str] = Query([], description="Metadata filter KEY=VALUE (repeatable; all must match)."),
    ):
        """Stored documents in id order, a page at a time."""
        filters = parse_where(where)
        docs = await asyncio.get_running_loop().run_in_executor(None, run, lambda ix: list(
            ix.documents(where=filters, limit=limit, offset=offset, after=after)))
        next_after = docs[-1].id if docs and len(docs) == limit else None
        return respond({"documents": [d.as_dict() for d in docs], "next_after": next_after})
