"""Searching a sharded index: embed the query once, search every shard, merge their top-k.

``ShardedSearcher`` has the query methods of ``Searcher`` (``search``,
``search_many``, ``search_batch``, ``search_vectors``) over a sharded index
(``index.distributed.shards``). A document lives whole in one shard, so its best passage
and score there are the ones one index over the same documents would find,
and the best ``k`` documents overall are among the shards' own best ``k``:
``merge_hits`` sorts them by score, ties by document id (as ``Searcher``
does), so the hits equal one index's. Each shard is searched in its own read
snapshot; there is no snapshot across shards. Hybrid (BM25) search is not
offered on shards: BM25 scores depend on each shard's own statistics.
``open_searcher`` opens a folder as whichever of the two it holds.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np

from index.distributed.shards import ShardedIndex, is_sharded
from index.errors import SemsearchError

from .searcher import Hit, Searcher, SearchOutcome, SearchRequest, check_k

NO_HYBRID = "hybrid search is not available on a sharded index (BM25 statistics differ per shard)"


def merge_hits(per_shard: Sequence[Sequence[Hit]], k: int) -> list[Hit]:
    """The best ``k`` of the shards' hits: by score, best first, ties by document id."""
    return sorted((hit for hits in per_shard for hit in hits), key=lambda h: (-h.score, h.id))[:k]


def check_queries(queries: Sequence[str]) -> None:
    for q in queries:
        if not isinstance(q, str) or not q.strip():
            raise SemsearchError("a query is empty; give some text to search for")


class ShardedSearcher:
    """Search a sharded index. ``index`` is its folder or an open :class:`index.distributed.shards.ShardedIndex`."""

    def __init__(self, index: str | os.PathLike | ShardedIndex, model: str | os.PathLike | None = None,
                 batch_size: int = 32, ef_search: int | None = None, nprobe: int | None = None,
                 hybrid: bool | None = None):
        if hybrid:
            raise SemsearchError(NO_HYBRID)
        self.index = index if isinstance(index, ShardedIndex) else ShardedIndex.open(index, model=model,
                                                                                   batch_size=batch_size)
        self.searchers = [Searcher(shard, ef_search=ef_search, nprobe=nprobe) for shard in self.index.indexes]

    @property
    def encoder(self):
        """The shards' encoder (every shard records the same configuration)."""
        return self.searchers[0].encoder

    def search(self, query: str, k: int = 10, where: Mapping[str, Any] | None = None,
               hybrid: bool | None = None) -> list[Hit]:
        """The ``k`` best documents for ``query`` over every shard, best first."""
        return self.search_many([query], k=k, where=where, hybrid=hybrid)[0]

    def search_many(self, queries: Sequence[str], k: int = 10, where: Mapping[str, Any] | None = None,
                    hybrid: bool | None = None) -> list[list[Hit]]:
        """:meth:`search` for many queries, embedded in one model call."""
        if isinstance(queries, str):
            raise TypeError("search_many takes a list of queries; use search() for one")
        if hybrid:
            raise SemsearchError(NO_HYBRID)
        check_k(k)
        check_queries(queries)
        if not queries:
            return []
        return self.search_vectors(self.encoder.encode(list(queries)), k, where)

    def search_vectors(self, vectors: np.ndarray, k: int = 10,
                       where: Mapping[str, Any] | None = None) -> list[list[Hit]]:
        """Search every shard with already-computed query vectors; each row's hits merged."""
        check_k(k)
        per_shard = [searcher.search_vectors(vectors, k, where) for searcher in self.searchers]
        return [merge_hits([hits[row] for hits in per_shard], k) for row in range(len(np.atleast_2d(vectors)))]

    def search_batch(self, requests: Sequence[SearchRequest]) -> list[SearchOutcome]:
        """Many queries with their own ``k`` and filter, embedded in one model call; a bad query gets
        its own error and does not stop the others (as ``Searcher.search_batch``)."""
        outcomes = [SearchOutcome(query=r.query) for r in requests]
        valid = []
        for i, request in enumerate(requests):
            try:
                if getattr(request, "hybrid", None):
                    raise SemsearchError(NO_HYBRID)
                check_queries([request.query])
                check_k(request.k)
                valid.append(i)
            except SemsearchError as exc:
                outcomes[i].error = str(exc)
        if valid:
            vectors = self.encoder.encode([requests[i].query for i in valid])
            for row, i in enumerate(valid):
                try:
                    outcomes[i].hits = self.search_vectors(vectors[row : row + 1], requests[i].k,
                                                           requests[i].where)[0]
                except SemsearchError as exc:
                    outcomes[i].error = str(exc)
        return outcomes


def open_searcher(path: str | os.PathLike, **options: Any) -> Searcher | ShardedSearcher:
    """A searcher for the index at ``path``: sharded or not, whichever the folder holds."""
    return ShardedSearcher(path, **options) if is_sharded(path) else Searcher(path, **options)
