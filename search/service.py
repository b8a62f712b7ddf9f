"""``semsearch serve``: the HTTP service (FastAPI), one long-running process per index.

The model and the index load once, in the background after start-up
(``/health`` answers 503 until they are ready). Searches, FAQ questions and
embeddings from concurrent clients are micro-batched (``batching``) and run
on worker threads, each with its own ``Searcher``; the index's later
commits, from this process or another, are followed on the next request.
Writes go through the same single-writer path as the CLI, on a writer
thread, and need ``Authorization: Bearer <token>`` when the server has a
token (without one the service is read-only). Every error is JSON with a
message and the right status; a page for people is served at ``/``.

Each request's work is bounded (``limits``): too many queries, too long a
text or too many hits is a 413 before any model call, a full queue a 503 with
``Retry-After``, a client that leaves has its queued queries dropped, one bad
query fails alone, a 500 never shows exception text, and without the token no
absolute path is shown. ``allowed_hosts`` refuses other Host headers (DNS
rebinding against a loopback server).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.middleware.trustedhost import TrustedHostMiddleware

from index.errors import IndexLockedError, IndexReplacedError, SemsearchError
from index.indexer import Index

from . import api_models as m
from . import documents_api
from . import limits as bounds
from .batching import MicroBatcher, QueueFull
from .faq import FAQ
from .http import (BodyLimit, ServiceError, check_filter, install_error_handlers, parse_where, query_filters,
                   until_disconnected)
from .limits import Limits, TooMuch
from .metrics import Metrics
from .observe import Observe, note
from .searcher import Searcher, SearchRequest

log = logging.getLogger("semsearch")

STATIC = Path(__file__).resolve().parent / "static"
MAX_K = 1000
WRITE_WAIT_S = 30.0  # a write waits this long for another process's write to finish, then 409


@dataclass
class Settings:
    index: Path
    token: str | None = None
    max_body_bytes: int = 10 * 1024 * 1024
    batch_window: float = 0.01
    batch_max: int = 32  # 1: every request on its own (micro-batching off)
    workers: int = 1
    limits: Limits = field(default_factory=Limits)
    allowed_hosts: list[str] | None = None  # Host headers answered (None: any)
    log_format: str = "none"  # one line per request: none, text or json (observe.py)
    log_queries: bool = False  # put the query text in that line


@dataclass
class State:
    ready: bool = False
    error: str | None = None
    batcher: MicroBatcher | None = None
    writer: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="semsearch-writer"))
    write_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass
class Work:
    """One unit of work for a batch: a search, a FAQ question, texts to embed, or the index info
    (answered from the worker's own open index, so that GET /index loads nothing)."""

    kind: str
    request: Any


def make_runner(index_path: Path):
    """A batch runner for one worker thread: its own Searcher (and database connection)."""
    searcher = Searcher(index_path)
    faq = FAQ(searcher)
    searcher.search("warm up", k=1)  # the model and the vectors are loaded now, not on the first request

    def run(items: list[Work]) -> list[Any]:
        results: list[Any] = [None] * len(items)
        wanted = [(i, w) for i, w in enumerate(items) if w.kind in ("search", "faq")]
        requests = [w.request if w.kind == "search" else SearchRequest(w.request[0], faq.depth, w.request[1], hybrid=False)
                    for _, w in wanted]  # a FAQ question comes as (question, filter)
        asked = []  # the FAQ questions of the batch, decided together
        for (i, w), outcome in zip(wanted, searcher.search_batch(requests)):
            if w.kind == "search" or outcome.error is not None:
                results[i] = outcome
            else:
                asked.append((i, outcome))
        for (i, _), reply in zip(asked, faq.decide_many([(o.query, o.hits or [], o.vector) for _, o in asked])):
            results[i] = reply
        for i, w in enumerate(items):
            if w.kind == "info":
                results[i] = searcher.index.info().as_dict()
            if w.kind == "embed":
                encoder = searcher.encoder
                try:
                    vectors = encoder.encode(w.request).round(7).tolist()
                except Exception:  # this request's own failure, not its neighbours'
                    log.exception("embedding %d texts failed", len(w.request))
                    results[i] = {"error": "these texts could not be embedded (see the server log)"}
                    continue
                results[i] = {"model": encoder.model_name, "layer": encoder.layer, "pooling": encoder.pooling,
                              "precision": encoder.precision, "dimension": encoder.dimension, "vectors": vectors}
        return results

    return run


def create_app(settings: Settings) -> FastAPI:
    state = State()
    metrics = Metrics(settings.index)

    async def load() -> None:
        loop = asyncio.get_running_loop()
        try:
            runners = await asyncio.gather(*(loop.run_in_executor(None, make_runner, settings.index)
                                             for _ in range(settings.workers)))
        except Exception as exc:  # e.g. a missing index or a changed model: say it on /health
            if not isinstance(exc, SemsearchError):
                log.error("the index could not be loaded", exc_info=exc)
            state.error = str(exc) if isinstance(exc, SemsearchError) else f"{type(exc).__name__}"
            return
        runners = [metrics.runner(run) for run in runners]  # batch sizes and model calls (metrics.py)
        state.batcher = MicroBatcher(runners, window=settings.batch_window, max_items=settings.batch_max,
                                     max_queue=settings.limits.max_queue)
        state.batcher.start()
        state.ready = True

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loading = asyncio.create_task(load())
        yield
        loading.cancel()
        if state.batcher:
            await state.batcher.stop()
        state.writer.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="semsearch", version=m.VERSION, lifespan=lifespan,
                  description="Semantic search over an index of documents: BERT sentence vectors, FAISS and SQLite.")
    app.state.semsearch = state
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes, seconds=settings.limits.body_seconds)
    if settings.allowed_hosts is not None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.allowed_hosts)
    limits = settings.limits

    install_error_handlers(app)
    app.add_middleware(Observe, metrics=metrics, routes=app.router.routes, log_format=settings.log_format,
                       log_queries=settings.log_queries)

    @app.get("/metrics", include_in_schema=False)
    async def metrics_text():
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    def ready() -> MicroBatcher:
        if state.error:
            raise ServiceError(503, f"the index could not be loaded: {state.error}")
        if not state.ready:
            raise ServiceError(503, "loading the model and the index; try again in a moment")
        return state.batcher

    def authorized(authorization: str | None) -> bool:
        """A valid bearer token (compared in constant time; never logged)."""
        scheme, _, given = (authorization or "").partition(" ")
        return (settings.token is not None and scheme.lower() == "bearer"
                and hmac.compare_digest(given.strip().encode(), settings.token.encode()))

    def writes_allowed(authorization: str | None = Header(None, description="Bearer <token>")) -> None:
        if settings.token is None:
            raise ServiceError(403, "this server is read-only: start it with --token-file to allow writes")
        if not authorized(authorization):
            raise ServiceError(401, "a valid 'Authorization: Bearer <token>' header is needed to write")

    async def submit(batcher: MicroBatcher, work: Work):
        try:
            return await batcher.submit(work)
        except QueueFull:
            raise ServiceError(503, f"the server is busy ({limits.max_queue} items are waiting); try again",
                               headers={"Retry-After": "1"}) from None

    def make_room(batcher: MicroBatcher, n: int) -> None:
        if batcher.room() < n:
            raise ServiceError(503, f"the server is busy ({limits.max_queue} items are waiting); try again",
                               headers={"Retry-After": "1"})

    def bounded_json(value: Any) -> Response:
        try:
            body = json.dumps(value, ensure_ascii=False, allow_nan=False).encode()
        except UnicodeEncodeError:  # a query echoed back with a lone surrogate: escaped, as it came
            body = json.dumps(value, ensure_ascii=True, allow_nan=False).encode()
        if len(body) > limits.max_response_bytes:
            raise TooMuch(f"the response would be {len(body) / 2**20:.1f} MB; at most "
                          f"{limits.max_response_bytes / 2**20:g} MB (ask for fewer hits, or without full_text)")
        return Response(body, media_type="application/json")

    # --- reading ---------------------------------------------------------------------------
    @app.get("/health", response_model=m.Health, tags=["service"],
             responses={503: {"model": m.Error, "description": "loading, or the index could not be loaded"}})
    async def health(authorization: str | None = Header(None, description="Bearer <token>: paths unredacted")):
        """Ready only once the model and the index are loaded."""
        if not state.ready:
            status = "error" if state.error else "loading"
            error = state.error if authorized(authorization) else bounds.redact(state.error, settings.index)
            return JSONResponse({"status": status, "error": error}, status_code=503)
        return {"status": "ready", "error": None}

    @app.get("/search", response_model=m.SearchResult, tags=["search"], responses=m.ERRORS)
    async def search_get(
        q: str = Query(..., description="The question or text to search for."),
        k: int = Query(10, ge=1, le=MAX_K, description="Number of documents to return."),
        where: list[str] = Query([], description="Metadata filter (repeatable; all must match): lang=en, lang!=en, year>=2021, lang in en,ko, text~E1234, key exists, or a JSON filter such as {\"year\": {\"$gte\": 2021}} (docs/filters.md)."),
        full_text: bool = Query(False, description="Send each hit's whole document text, not a snippet."),
    ):
        """The k documents that mean the most the same as q."""
        bounds.check_queries([q], k, limits)
        outcome = await submit(ready(), Work("search", SearchRequest(q, k, parse_where(where))))
        note(query_chars=len(q), hits=len(outcome.hits or []), query=q)
        if outcome.error:
            raise ServiceError(400, outcome.error)
        return bounded_json(bounds.trim_hits(outcome.as_dict(), limits.hit_text_chars, full_text))

    @app.post("/search", response_model=m.SearchResults, tags=["search"], responses=m.ERRORS)
    async def search_post(body: m.SearchBody, request: Request):
        """Many queries at once; a bad query gets its own error entry, the others their hits, in input order."""
        bounds.check_queries(body.queries, body.k, limits)
        wheres = query_filters(body.where, body.wheres, len(body.queries))
        batcher = ready()
        make_room(batcher, len(body.queries))
        outcomes = await until_disconnected(request, asyncio.gather(
            *(submit(batcher, Work("search", SearchRequest(q, body.k, w))) for q, w in zip(body.queries, wheres))))
        note(queries=len(body.queries), query_chars=sum(map(len, body.queries)),
             hits=sum(len(o.hits or []) for o in outcomes), queries_text=body.queries)
        return bounded_json({"results": [bounds.trim_hits(o.as_dict(), limits.hit_text_chars, body.full_text)
                                         for o in outcomes]})

    @app.post("/faq/answer", response_model=m.FAQReply, tags=["faq"], responses=m.ERRORS)
    async def faq_answer(body: m.FAQQuestion):
        """The FAQ entry that answers the question, or not confident with the closest entries."""
        bounds.check_chars(body.question, limits.max_query_chars, "the question", "--max-query-chars")
        check_filter(body.where)
        reply = await submit(ready(), Work("faq", (body.question, body.where)))
        note(query_chars=len(body.question), query=body.question)
        if getattr(reply, "error", None):
            raise ServiceError(400, reply.error)
        return reply.as_dict()

    @app.post("/embed", response_model=m.Embeddings, tags=["search"], responses=m.ERRORS)
    async def embed(body: m.EmbedBody):
        """Sentence vectors with the index's own model, layer, pooling and precision."""
        bounds.check_texts(body.texts, limits)
        if any(not t.strip() for t in body.texts):
            raise ServiceError(400, "a text is empty")
        for n, text in enumerate(body.texts, 1):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise ServiceError(400, f"text {n} is not valid text (a lone surrogate)") from None
        batcher = ready()
        make_room(batcher, 1)
        result = await submit(batcher, Work("embed", body.texts))
        if isinstance(result, dict) and result.get("error"):
            raise ServiceError(400, result["error"])
        return result

    @app.get("/index", response_model=m.IndexInfoModel, tags=["index"], responses=m.ERRORS)
    async def index_info(authorization: str | None = Header(None, description="Bearer <token>: paths unredacted")):
        """The index's model, layer, pooling, counts, vector index type and generation (the index
        folder and a model folder by their names, unless the request carries the token)."""
        described = await submit(ready(), Work("info", None))  # a worker's open index: no second copy
        return described if authorized(authorization) else bounds.public_info(described, settings.index)

    # --- writing ---------------------------------------------------------------------------
    async def write(job, kind: str):
        ready()
        async with state.write_lock:
            for attempt in (1, 2):
                try:
                    with metrics.write(kind):
                        return await asyncio.get_running_loop().run_in_executor(state.writer, job)
                except IndexReplacedError as exc:  # build --force swapped the folder: the new index takes it
                    if attempt == 2:
                        raise ServiceError(409, str(exc)) from None
                except IndexLockedError as exc:
                    raise ServiceError(409, str(exc)) from None
                except SemsearchError as exc:
                    raise ServiceError(400, str(exc)) from None

    @app.post("/documents", response_model=m.AddReply, tags=["index"], dependencies=[Depends(writes_allowed)],
              responses={**m.ERRORS, 401: {"model": m.Error}, 403: {"model": m.Error}, 409: {"model": m.Error}})
    async def add_documents(body: m.DocumentsBody):
        """Add or replace documents (unchanged texts are not encoded again)."""
        if len(body.documents) > limits.max_documents:
            raise TooMuch(f"{len(body.documents):,} documents in one request; at most {limits.max_documents:,} "
                          "(--max-documents)")
        docs = [d.model_dump() for d in body.documents]

        def job():
            with Index.open(settings.index, wait=WRITE_WAIT_S) as index:
                result = index.add(docs)
            return {"added": result.added, "updated": result.updated, "unchanged": result.unchanged,
                    "metadata_updated": result.metadata_updated, "skipped_empty": result.skipped_empty,
                    "duplicates": result.duplicates, "passages": result.passages}

        return await write(job, "add")

    @app.delete("/documents/{doc_id:path}", response_model=m.DeleteReply, tags=["index"],
                dependencies=[Depends(writes_allowed)],
                responses={**m.ERRORS, 401: {"model": m.Error}, 403: {"model": m.Error}, 404: {"model": m.Error},
                           409: {"model": m.Error}})
    async def delete_document(doc_id: str):
        """Delete one document by id."""

        def job():
            with Index.open(settings.index, wait=WRITE_WAIT_S) as index:
                return index.delete([doc_id])

        result = await write(job, "delete")
        if not result.deleted:
            raise ServiceError(404, f"no document {doc_id!r} in the index")
        return {"deleted": result.deleted[0]}

    documents_api.add_routes(app, settings.index, bounded_json)  # GET /documents/{id}, GET /documents

    # --- the page ----------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


