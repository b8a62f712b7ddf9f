"""The query path: embed questions the way the index embedded its documents, search, fetch.

A document's score is its best passage's score; a hit names the passage that
matched. Metadata filters (``where``) restrict the vector search itself to the
matching documents' passages, so ``k`` hits come back whenever ``k`` documents
match. Every search runs in one read snapshot (``index.storage.snapshot``): the query
is embedded by the encoder that snapshot's configuration names, so a
long-running ``Searcher`` follows other processes' commits and rebuilds.
With ``hybrid`` (by default when the index records it) the vector ranking is
fused with a BM25 ranking of the same snapshot's passages (``search.hybrid``);
a hit's score is then its fused score, the mean of its z-scores in the two rankings.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from index.ann.registry import SearchSettings
from index.errors import SemsearchError
from index.indexer import Index
from index.lexical.bm25 import SETTING as HYBRID_SETTING
from index.records import Passage
from index.storage.snapshot import Snapshot

from . import hybrid as fusion
from . import planner

log = logging.getLogger("semsearch")

__all__ = ["Hit", "Passage", "Searcher", "SearchRequest", "SearchOutcome"]


@dataclass
class Hit:
    id: str
    score: float
    text: str
    metadata: dict[str, Any]
    passage: Passage

    def as_dict(self) -> dict[str, Any]:
        """As JSON: ``{"id", "score", "text", "metadata", "passage": {"order", "start", "end", "text"}}``
        (the metadata is the hit's own, not a copy)."""
        p = self.passage
        return {"id": self.id, "score": self.score, "text": self.text, "metadata": self.metadata,
                "passage": {"order": p.order, "start": p.start, "end": p.end, "text": p.text}}


@dataclass
class SearchRequest:
    """One query of a batch, with its own ``k`` and metadata filter."""

    query: str
    k: int = 10
    where: Mapping[str, Any] | None = None
    hybrid: bool | None = None  # None: the Searcher's setting


@dataclass
class SearchOutcome:
    """The answer to one ``SearchRequest``: its hits, or why it could not be run."""

    query: str
    hits: list[Hit] | None = None
    error: str | None = None
    vector: np.ndarray | None = field(default=None, repr=False)  # the query's raw vector, as searched with

    def as_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {"query": self.query, "error": self.error}
        return {"query": self.query, "hits": [h.as_dict() for h in self.hits or []]}


class Searcher:
    """Search one index. ``index`` is a path or an open :class:`index.Index`."""

    def __init__(self, index: str | os.PathLike | Index, model: str | os.PathLike | None = None,
                 batch_size: int = 32, ef_search: int | None = None, nprobe: int | None = None,
                 hybrid: bool | None = None):
        """``ef_search`` (HNSW) and ``nprobe`` (IVF) override the defaults, which are tuned
        for recall@10 >= 0.95 against exact search. ``hybrid`` fuses BM25 with the vectors
        (None: as the index records, off unless built with ``hybrid=True``; needs ``bm25s``)."""
        self.index = index if isinstance(index, Index) else Index.open(Path(index), model=model,
                                                                       batch_size=batch_size)
        self.settings = SearchSettings(ef_search=ef_search, nprobe=nprobe)
        self.hybrid = hybrid
        self.generation: int | None = None  # the committed generation the last search answered from

    @property
    def encoder(self):
        return self.index.encoder

    def search(self, query: str, k: int = 10, where: Mapping[str, Any] | None = None,
               hybrid: bool | None = None) -> list[Hit]:
        """The ``k`` best documents for ``query``, best first (``hybrid``: see the class)."""
        return self.search_many([query], k=k, where=where, hybrid=hybrid)[0]

    def search_many(self, queries: Sequence[str], k: int = 10,
                    where: Mapping[str, Any] | None = None, hybrid: bool | None = None) -> list[list[Hit]]:
        """:meth:`search` for many queries, encoded in batches."""
        if isinstance(queries, str):
            raise TypeError("search_many takes a list of queries; use search() for one")
        check_queries(queries, k)
        if not queries:
            return []
        with self.index.snapshot() as snap:
            vectors = snap.encoder.encode(list(queries))
            if self.uses_hybrid(snap, hybrid):
                return self._search_hybrid(snap, list(queries), vectors, k, where)
            return self._search(snap, vectors, k, where)

    def search_bm25(self, queries: Sequence[str], k: int = 10,
                    where: Mapping[str, Any] | None = None) -> list[list[Hit]]:
        """BM25 alone, for comparison with the vector and hybrid rankings (scores are BM25's;
        documents sharing no term with a query are not returned). Needs ``bm25s``."""
        if isinstance(queries, str):
            raise TypeError("search_bm25 takes a list of queries")
        check_queries(queries, k)
        with self.index.snapshot() as snap:
            self.generation = snap.generation
            lexical = self.index.lexical.current(snap.generation)
            allowed = snap.allowed_ids(where)
            return [self._hits(snap, [(r.id, r.score, r.passage)
                                      for r in fusion.lexical_ranking(snap, lexical, q, k, allowed)])
                    for q in queries]

    def uses_hybrid(self, snap: Snapshot, asked: bool | None = None) -> bool:
        """Whether a search is hybrid: as ``asked``, else as the Searcher was made, else as the index records."""
        for choice in (asked, self.hybrid):
            if choice is not None:
                return bool(choice)
        return bool(snap.info.get(HYBRID_SETTING, False))

    def search_batch(self, requests: Sequence[SearchRequest]) -> list[SearchOutcome]:
        """Many queries, each with its own ``k`` and filter, embedded in one model call and answered
        from one snapshot. Every failure is the query's own: a bad query (empty, not valid text, a
        filter SQLite cannot evaluate, anything unexpected) gets its error and the others their hits."""
        outcomes = [SearchOutcome(query=r.query) for r in requests]
        valid = []
        for i, request in enumerate(requests):
            try:
                check_query(request.query)
                check_k(request.k)
                valid.append(i)
            except SemsearchError as exc:
                outcomes[i].error = str(exc)
        if not valid:
            return outcomes
        with self.index.snapshot() as snap:
            vectors = self._encode_each_alone_on_failure(snap, [requests[i].query for i in valid])
            for row, i in enumerate(valid):
                r = requests[i]
                if vectors[row] is None:
                    outcomes[i].error = "this query could not be embedded"
                    continue
                outcomes[i].vector = vectors[row]
                try:
                    if self.uses_hybrid(snap, r.hybrid):
                        outcomes[i].hits = self._search_hybrid(snap, [r.query], vectors[row][None, :], r.k, r.where)[0]
                    else:
                        outcomes[i].hits = self._search(snap, vectors[row][None, :], r.k, r.where)[0]
                except SemsearchError as exc:
                    outcomes[i].error = str(exc)
                except Exception:  # never the neighbours' problem; the server log has the details
                    log.exception("query %d of a batch failed", row)
                    outcomes[i].error = "this query could not be run (an internal error; see the server log)"
        return outcomes

    @staticmethod
    def _encode_each_alone_on_failure(snap: Snapshot, queries: list[str]) -> list[np.ndarray | None]:
        """The queries' vectors in one model call; if that call fails, each query alone, so that
        only the query that breaks the model loses its vector (None)."""
        try:
            return list(snap.encoder.encode(queries))
        except Exception:
            log.exception("embedding a batch of %d queries failed; embedding them one by one", len(queries))
        out: list[np.ndarray | None] = []
        for query in queries:
            try:
                out.append(snap.encoder.encode([query])[0])
            except Exception:
                log.exception("embedding one query failed")
                out.append(None)
        return out

    def search_vectors(self, vectors: np.ndarray, k: int = 10,
                       where: Mapping[str, Any] | None = None) -> list[list[Hit]]:
        """Search with already-computed query vectors (rows L2-normalised)."""
        check_k(k)
        with self.index.snapshot() as snap:
            return self._search(snap, vectors, k, where)

    def _search(self, snap: Snapshot, vectors: np.ndarray, k: int, where) -> list[list[Hit]]:
        """Inside one snapshot: vector search, passage rows and documents all of one state."""
        self.generation = snap.generation
        allowed = snap.allowed_ids(where)
        pool = snap.vectors.ntotal if allowed is None else len(allowed)
        return [self._hits(snap, self._best_passages(snap, row, k, allowed, pool)) for row in np.atleast_2d(vectors)]

    def _search_hybrid(self, snap: Snapshot, queries: list[str], vectors: np.ndarray, k: int,
                       where) -> list[list[Hit]]:
        """Inside one snapshot: the vector and BM25 rankings of each query, fused (``search.hybrid``)."""
        self.generation = snap.generation
        lexical = self.index.lexical.current(snap.generation)
        allowed = snap.allowed_ids(where)
        pool = snap.vectors.ntotal if allowed is None else len(allowed)
        depth = max(k, fusion.DEPTH)
        out = []
        for query, row in zip(queries, np.atleast_2d(vectors)):
            dense = [fusion.Ranked(d, s, p) for d, s, p in self._best_passages(snap, row, depth, allowed, pool)]
            bm25 = fusion.lexical_ranking(snap, lexical, query, depth, allowed)
            fused = fusion.fuse(dense, bm25, k, lexical_complete=len(bm25) < depth)
            out.append(self._hits(snap, [(f.id, f.score, f.passage) for f in fused]))
        return out

    def _best_passages(self, snap: Snapshot, vector: np.ndarray, k: int, allowed, pool: int):
        """Best passage per document for the top ``k`` documents: ``[(doc_id, score, passage)]``
        (exact scoring or the ANN index: ``search.planner``)."""
        return planner.best_passages(snap, vector, k, allowed, self.settings)

    def _hits(self, snap: Snapshot, best) -> list[Hit]:
        docs = snap.documents([doc_id for doc_id, _, _ in best])
        hits = []
        for doc_id, score, passage in best:
            text, metadata = docs.get(doc_id, ("", {}))
            hits.append(Hit(id=doc_id, score=score, text=text, metadata=metadata, passage=passage))
        return hits


def check_queries(queries: Sequence[str], k: int) -> None:
    check_k(k)
    for q in queries:
        check_query(q)


def check_query(query: Any) -> None:
    """A query must be non-empty text that UTF-8 can carry (a lone surrogate cannot)."""
    if not isinstance(query, str) or not query.strip():
        raise SemsearchError("a query is empty; give some text to search for")
    try:
        query.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise SemsearchError(f"a query is not valid text (a lone surrogate at character {exc.start})") from None


def check_k(k: int) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise SemsearchError(f"k must be a whole number of at least 1 (got {k!r})")
