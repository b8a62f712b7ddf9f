"""``semsearch serve --engine ray``: an index's shards as Ray Serve deployments behind one HTTP endpoint.

Each shard of a sharded index (``index.distributed.shards``; an unsharded index is one
shard) is a deployment, ``shard-<n>``, of ``replicas`` replicas: a
``Searcher`` over that shard's folder answering vector searches. The ingress
deployment, ``gateway``, is a FastAPI app with the JSON of ``search.service``
for ``GET /search``, ``POST /search`` and ``GET /health`` (the models of
``search.api_models``): it embeds each query once with the index's encoder
(queries arriving together share one model call, ``serve.batch``), sends the
vector to every shard deployment and merges their top-k with
``search.sharded.merge_hits``, so the hits equal one index's. The service is
read-only; ``semsearch index add/delete`` write the shards, and replicas
follow those commits on the next request. Every replica must be able to read
its shard's folder at the same path (a shared file system on a cluster).
Ray is imported only here, when used. (No ``from __future__ import
annotations``: the gateway's class travels to its replica by value, and
FastAPI must read its annotations as objects, not as names to look up.)
"""

import asyncio
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Query
from fastapi.responses import JSONResponse

from index.distributed.ray_engine import connect, import_ray
from index.distributed.shards import ShardManifest, is_sharded
from index.errors import SemsearchError

from . import api_models as m
from . import limits as bounds
from .http import ServiceError, install_error_handlers, parse_where, query_filters
from .limits import Limits
from .service import MAX_K
from .sharded import check_queries, merge_hits

APP_NAME = "semsearch"


@dataclass(frozen=True)
class RayServeSettings:
    index: Path
    replicas: int = 1  # replicas of each shard's deployment
    replica_cpus: float = 1.0  # CPUs reserved by each shard replica
    gateway_cpus: float = 1.0  # CPUs reserved by the gateway (it embeds the queries)
    batch_max: int = 32  # most queries per model call in the gateway
    batch_window: float = 0.01  # seconds a query waits for others to share its model call
    limits: Limits = field(default_factory=Limits)  # the same bounds per request as `semsearch serve`


def shard_folders(path: Path) -> list[Path]:
    """The index folders to serve: every shard of a sharded index, or the index itself."""
    path = Path(path).resolve()
    return [path / name for name in ShardManifest.load(path).shards] if is_sharded(path) else [path]


def import_serve():
    """``ray.serve``; one clear line when Ray is not installed."""
    import_ray()
    from ray import serve

    return serve


class ShardReplica:
    """One replica of a shard's deployment: a ``Searcher`` over the shard, one search at a time."""

    def __init__(self, folder: str):
        from .searcher import Searcher

        self.searcher = Searcher(folder)
        self.lock = threading.Lock()  # one SQLite connection per replica: its snapshots must not interleave
        self.searcher.search_vectors(np.zeros((1, int(self.searcher.index.config["dimension"])), np.float32), 1)

    def search(self, vectors: np.ndarray, k: int, where: dict | None):
        with self.lock:
            return self.searcher.search_vectors(vectors, k, where)

    def ready(self) -> bool:
        return True


def make_gateway_app() -> FastAPI:
    app = FastAPI(title="semsearch on Ray Serve", version=m.VERSION,
                  description="Semantic search over a sharded index: each shard a Ray Serve deployment.")

    install_error_handlers(app)
    return app


def application(settings: RayServeSettings):
    """The Ray Serve application: one deployment per shard and the gateway (bind it with ``serve.run``)."""
    serve = import_serve()
    folders = shard_folders(settings.index)
    app = make_gateway_app()
    limits = settings.limits

    class Gateway:
        def __init__(self, index_folder: str, shards: list):
            from index.indexer import Index

            self.index = Index.open(index_folder)  # the first shard: its recorded encoder embeds the queries
            self.shards = shards
            self.lock = threading.Lock()
            self.index.encoder.encode(["warm up"])

        def encode(self, queries: list[str]) -> np.ndarray:
            with self.lock:
                return self.index.encoder.encode(queries)  # follows a rebuild of the shards' model

        @serve.batch(max_batch_size=settings.batch_max, batch_wait_timeout_s=settings.batch_window)
        async def embed(self, queries: list[str]) -> list[np.ndarray]:
            return list(await asyncio.get_running_loop().run_in_executor(None, self.encode, queries))

        async def search(self, queries: list[str], k: int, where: dict | None) -> list[list[Any]]:
            vectors = np.stack(await asyncio.gather(*(self.embed(q) for q in queries)))
            try:
                per_shard = await asyncio.gather(*(shard.search.remote(vectors, k, where) for shard in self.shards))
            except Exception as exc:  # a shard's SemsearchError arrives wrapped by Ray
                raise ServiceError(400 if "SemsearchError" in str(exc) else 500, str(exc).splitlines()[-1]) from None
            return [merge_hits([hits[row] for hits in per_shard], k) for row in range(len(queries))]

        @app.get("/health", response_model=m.Health, tags=["service"])
        async def health(self):
            """Ready once every shard's replicas answer."""
            try:
                await asyncio.gather(*(shard.ready.remote() for shard in self.shards))
            except Exception as exc:
                error = bounds.redact(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, folders[0])
                return JSONResponse({"status": "error", "error": error}, status_code=503)
            return {"status": "ready", "error": None}

        @app.get("/search", response_model=m.SearchResult, tags=["search"], responses=m.ERRORS)
        async def search_get(self, q: str = Query(..., description="The question or text to search for."),
                             k: int = Query(10, ge=1, le=MAX_K, description="Number of documents to return."),
                             where: list[str] = Query([], description="Metadata filter KEY=VALUE (repeatable).")):
            """The k documents that mean the most the same as q."""
            bounds.check_queries([q], k, limits)
            try:
                check_queries([q])
            except SemsearchError as exc:
                raise ServiceError(400, str(exc)) from None
            hits = (await self.search([q], k, parse_where(where)))[0]
            return JSONResponse(bounds.trim_hits({"query": q, "hits": [h.as_dict() for h in hits]},
                                                 limits.hit_text_chars, False))

        @app.post("/search", response_model=m.SearchResults, tags=["search"], responses=m.ERRORS)
        async def search_post(self, body: m.SearchBody):
            """Many queries at once; a bad query gets its own error entry, the others their hits, in input order."""
            bounds.check_queries(body.queries, body.k, limits)
            wheres = query_filters(body.where, body.wheres, len(body.queries))
            results: list[dict] = []
            valid = []
            for i, q in enumerate(body.queries):
                try:
                    check_queries([q])
                    valid.append(i)
                    results.append({})
                except SemsearchError as exc:
                    results.append({"query": q, "error": str(exc)})
            groups: dict[str, list[int]] = {}  # queries of the same filter searched together
            for i in valid:
                groups.setdefault(json.dumps(wheres[i], sort_keys=True), []).append(i)
            for group in groups.values():
                found = await self.search([body.queries[i] for i in group], body.k, wheres[group[0]])
                for i, hits in zip(group, found):
                    results[i] = bounds.trim_hits({"query": body.queries[i], "hits": [h.as_dict() for h in hits]},
                                                  limits.hit_text_chars, body.full_text)
            return JSONResponse({"results": results})

    shard = serve.deployment(ShardReplica, num_replicas=settings.replicas,
                             ray_actor_options={"num_cpus": settings.replica_cpus}, max_ongoing_requests=4)
    gateway = serve.deployment(serve.ingress(app)(Gateway), name="gateway",
                               ray_actor_options={"num_cpus": settings.gateway_cpus})
    handles = [shard.options(name=f"shard-{n}").bind(str(folder)) for n, folder in enumerate(folders)]
    return gateway.bind(str(folders[0]), handles)


def start(settings: RayServeSettings, *, host: str = "127.0.0.1", port: int = 8000, address: str | None = None):
    """Connect to Ray, start Serve's HTTP proxy on ``host:port`` (on the head node) and deploy the index;
    returns once every replica is up."""
    for folder in shard_folders(settings.index):
        from index.indexer import Index

        Index.open(folder).close()  # a missing or damaged shard is one line, before anything starts
    connect(address)
    serve = import_serve()
    serve.start(http_options={"host": host, "port": port}, proxy_location="HeadOnly")
    serve.run(application(settings), name=APP_NAME, route_prefix="/", blocking=False)
    return serve


def stop() -> None:
    """Remove the application (the Ray cluster and Serve itself stay)."""
    from ray import serve

    serve.delete(APP_NAME)
