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
"""

from __future__ import annotations

import asyncio
import hmac
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from index.errors import IndexLockedError, SemsearchError
from index.indexer import Index

from . import api_models as m
from .batching import MicroBatcher
from .faq import FAQ
from .searcher import Searcher, SearchRequest

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


@dataclass
class State:
    ready: bool = False
    error: str | None = None
    batcher: MicroBatcher | None = None
    writer: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="semsearch-writer"))
    write_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class ServiceError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Work:
    """One unit of work for a batch: a search, a FAQ question or texts to embed."""

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
        requests = [w.request if w.kind == "search" else SearchRequest(w.request, faq.depth, hybrid=False) for _, w in wanted]
        for (i, w), outcome in zip(wanted, searcher.search_batch(requests)):
            if w.kind == "search" or outcome.error is not None:
                results[i] = outcome
            else:
                results[i] = faq.decide(outcome.query, outcome.hits or [])
        for i, w in enumerate(items):
            if w.kind == "embed":
                encoder = searcher.encoder
                results[i] = {"model": encoder.model_name, "layer": encoder.layer, "pooling": encoder.pooling,
                              "precision": encoder.precision, "dimension": encoder.dimension,
                              "vectors": encoder.encode(w.request).round(7).tolist()}
        return results

    return run


def install_error_handlers(app: FastAPI) -> None:
    """Errors always as JSON ``{"error": ...}`` (and ``details`` for a malformed request), never a traceback."""

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError):
        return JSONResponse({"error": exc.message}, status_code=exc.status)

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
        return JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)


def create_app(settings: Settings) -> FastAPI:
    state = State()

    async def load() -> None:
        loop = asyncio.get_running_loop()
        try:
            runners = await asyncio.gather(*(loop.run_in_executor(None, make_runner, settings.index)
                                             for _ in range(settings.workers)))
        except Exception as exc:  # e.g. a missing index or a changed model: say it on /health
            state.error = str(exc) if isinstance(exc, SemsearchError) else f"{type(exc).__name__}: {exc}"
            return
        state.batcher = MicroBatcher(runners, window=settings.batch_window, max_items=settings.batch_max)
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
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)

    install_error_handlers(app)

    def ready() -> MicroBatcher:
        if state.error:
            raise ServiceError(503, f"the index could not be loaded: {state.error}")
        if not state.ready:
            raise ServiceError(503, "loading the model and the index; try again in a moment")
        return state.batcher

    def writes_allowed(authorization: str | None = Header(None, description="Bearer <token>")) -> None:
        if settings.token is None:
            raise ServiceError(403, "this server is read-only: start it with --token-file to allow writes")
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), settings.token.encode()):
            raise ServiceError(401, "a valid 'Authorization: Bearer <token>' header is needed to write")

    # --- reading ---------------------------------------------------------------------------
    @app.get("/health", response_model=m.Health, tags=["service"],
             responses={503: {"model": m.Error, "description": "loading, or the index could not be loaded"}})
    async def health():
        """Ready only once the model and the index are loaded."""
        if not state.ready:
            status = "error" if state.error else "loading"
            return JSONResponse({"status": status, "error": state.error}, status_code=503)
        return {"status": "ready", "error": None}

    @app.get("/search", response_model=m.SearchResult, tags=["search"], responses=m.ERRORS)
    async def search_get(
        q: str = Query(..., description="The question or text to search for."),
        k: int = Query(10, ge=1, le=MAX_K, description="Number of documents to return."),
        where: list[str] = Query([], description="Metadata filter KEY=VALUE (repeatable; all must match)."),
    ):
        """The k documents that mean the most the same as q."""
        outcome = await ready().submit(Work("search", SearchRequest(q, k, parse_where(where))))
        if outcome.error:
            raise ServiceError(400, outcome.error)
        return JSONResponse(outcome.as_dict())  # already plain JSON: no second validation pass

    @app.post("/search", response_model=m.SearchResults, tags=["search"], responses=m.ERRORS)
    async def search_post(body: m.SearchBody):
        """Many queries at once; a bad query gets its own error entry, the others their hits, in input order."""
        batcher = ready()
        outcomes = await asyncio.gather(*(batcher.submit(Work("search", SearchRequest(q, body.k, body.where)))
                                          for q in body.queries))
        return JSONResponse({"results": [o.as_dict() for o in outcomes]})  # as built: no null fields added

    @app.post("/faq/answer", response_model=m.FAQReply, tags=["faq"], responses=m.ERRORS)
    async def faq_answer(body: m.FAQQuestion):
        """The FAQ entry that answers the question, or not confident with the closest entries."""
        reply = await ready().submit(Work("faq", body.question))
        if getattr(reply, "error", None):
            raise ServiceError(400, reply.error)
        return reply.as_dict()

    @app.post("/embed", response_model=m.Embeddings, tags=["search"], responses=m.ERRORS)
    async def embed(body: m.EmbedBody):
        """Sentence vectors with the index's own model, layer, pooling and precision."""
        if any(not t.strip() for t in body.texts):
            raise ServiceError(400, "a text is empty")
        return await ready().submit(Work("embed", body.texts))

    @app.get("/index", response_model=m.IndexInfoModel, tags=["index"], responses=m.ERRORS)
    async def index_info():
        """The index's model, layer, pooling, counts, vector index type and generation."""
        ready()

        def info():
            with Index.open(settings.index) as index:
                return index.info().as_dict()

        return await asyncio.get_running_loop().run_in_executor(None, info)

    # --- writing ---------------------------------------------------------------------------
    async def write(job):
        ready()
        async with state.write_lock:
            try:
                return await asyncio.get_running_loop().run_in_executor(state.writer, job)
            except IndexLockedError as exc:
                raise ServiceError(409, str(exc)) from None
            except SemsearchError as exc:
                raise ServiceError(400, str(exc)) from None

    @app.post("/documents", response_model=m.AddReply, tags=["index"], dependencies=[Depends(writes_allowed)],
              responses={**m.ERRORS, 401: {"model": m.Error}, 403: {"model": m.Error}, 409: {"model": m.Error}})
    async def add_documents(body: m.DocumentsBody):
        """Add or replace documents (unchanged texts are not encoded again)."""
        docs = [d.model_dump() for d in body.documents]

        def job():
            with Index.open(settings.index, wait=WRITE_WAIT_S) as index:
                result = index.add(docs)
            return {"added": result.added, "updated": result.updated, "unchanged": result.unchanged,
                    "metadata_updated": result.metadata_updated, "skipped_empty": result.skipped_empty,
                    "duplicates": result.duplicates, "passages": result.passages}

        return await write(job)

    @app.delete("/documents/{doc_id:path}", response_model=m.DeleteReply, tags=["index"],
                dependencies=[Depends(writes_allowed)],
                responses={**m.ERRORS, 401: {"model": m.Error}, 403: {"model": m.Error}, 404: {"model": m.Error},
                           409: {"model": m.Error}})
    async def delete_document(doc_id: str):
        """Delete one document by id."""

        def job():
            with Index.open(settings.index, wait=WRITE_WAIT_S) as index:
                return index.delete([doc_id])

        result = await write(job)
        if not result.deleted:
            raise ServiceError(404, f"no document {doc_id!r} in the index")
        return {"deleted": result.deleted[0]}

    # --- the page ----------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def parse_where(pairs: list[str]) -> dict[str, str] | None:
    where: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ServiceError(400, f"where={pair!r}: expected KEY=VALUE")
        if key in where:
            raise ServiceError(400, f"where names {key!r} twice")
        where[key] = value
    return where or None


class BodyLimit:
    """Refuses a request body over ``limit`` bytes with 413, by its Content-Length or as it streams
    (the body is read here, up to the limit, and handed on whole)."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self.refuse(send)
        chunks, size = [], 0
        while True:
            message = await receive()
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
