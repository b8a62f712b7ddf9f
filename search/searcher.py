"""The query path: embed questions the way the index embedded its documents, search, fetch.

A document's score is its best passage's score; a hit names the passage that
matched. Metadata filters (``where``) restrict the vector search itself to the
matching documents' passages, so ``k`` hits come back whenever ``k`` documents
match. A long-running ``Searcher`` notices a newer committed index state and
reloads it before the next query.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from index.errors import SemsearchError
from index.indexer import Index, encoder_key
from index.vectors import SearchSettings


@dataclass
class Passage:
    """The part of a document that matched: its position, character span and text."""

    order: int
    start: int
    end: int
    text: str


@dataclass
class Hit:
    id: str
    score: float
    text: str
    metadata: dict[str, Any]
    passage: Passage

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Searcher:
    """Search one index. ``index`` is a path or an open :class:`index.Index`."""

    def __init__(self, index: str | os.PathLike | Index, model: str | os.PathLike | None = None,
                 batch_size: int = 32, ef_search: int | None = None, nprobe: int | None = None):
        """``ef_search`` (HNSW) and ``nprobe`` (IVF) override the defaults, which are tuned
        for recall@10 >= 0.95 against exact search."""
        self.index = index if isinstance(index, Index) else Index.open(Path(index), model=model,
                                                                       batch_size=batch_size)
        self.settings = SearchSettings(ef_search=ef_search, nprobe=nprobe)

    @property
    def encoder(self):
        return self.index.encoder

    def search(self, query: str, k: int = 10, where: Mapping[str, Any] | None = None) -> list[Hit]:
        """The ``k`` best documents for ``query``, best first."""
        return self.search_many([query], k=k, where=where)[0]

    def search_many(self, queries: Sequence[str], k: int = 10,
                    where: Mapping[str, Any] | None = None) -> list[list[Hit]]:
        """:meth:`search` for many queries, encoded in batches."""
        if isinstance(queries, str):
            raise TypeError("search_many takes a list of queries; use search() for one")
        _check_k(k)
        for q in queries:
            if not isinstance(q, str) or not q.strip():
                raise SemsearchError("a query is empty; give some text to search for")
        if not queries:
            return []
        for _ in range(3):
            encoder = self.encoder  # follows the recorded configuration
            key = self.index._encoder_key
            vectors = encoder.encode(list(queries))
            with self.index.snapshot():
                if encoder_key(self.index.config) == key:  # no rebuild committed meanwhile
                    return self._search(vectors, k, where)
        raise SemsearchError("the index configuration kept changing during the search; try again")

    def search_vectors(self, vectors: np.ndarray, k: int = 10,
                       where: Mapping[str, Any] | None = None) -> list[list[Hit]]:
        """Search with already-computed query vectors (rows L2-normalised)."""
        _check_k(k)
        with self.index.snapshot():
            return self._search(vectors, k, where)

    def _search(self, vectors: np.ndarray, k: int, where) -> list[list[Hit]]:
        """Inside one snapshot: vector search, passage rows and documents all of one state."""
        index = self.index
        faiss_index = index._vectors
        allowed = index.store.filtered_passage_ids(dict(where)) if where else None
        pool = faiss_index.ntotal if allowed is None else len(allowed)
        results: list[list[Hit]] = []
        for row in np.atleast_2d(vectors):
            best = self._best_passages(faiss_index, row, k, allowed, pool)
            results.append(self._hits(best))
        return results

    def _best_passages(self, faiss_index, vector: np.ndarray, k: int, allowed, pool: int):
        """Best passage per document for the top ``k`` documents: ``[(doc_id, score, passage)]``.

        Fetches more passages until ``k`` distinct documents are found or every
        candidate passage has been seen.
        """
        if pool == 0:
            return []
        fetch = min(pool, max(2 * k, k + 20))
        if faiss_index.kind == "ivfpq":  # compressed scores: take more candidates, re-rank exactly
            fetch = min(pool, max(fetch, 10 * k, 100))
        while True:
            scores, ids = faiss_index.search(vector[None, :], fetch, allowed, self.settings)
            found = [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]
            if faiss_index.kind == "ivfpq":
                found = self._rerank(vector, [i for i, _ in found])
            rows = self.index.store.passages([i for i, _ in found])
            best: dict[str, tuple[float, Any]] = {}
            for pid, score in found:
                row = rows.get(pid)
                if row is not None and row.document_id not in best:
                    best[row.document_id] = (score, row)
            if len(best) >= k or fetch >= pool:
                ranked = sorted(best.items(), key=lambda kv: (-kv[1][0], kv[0]))[:k]
                return [(doc_id, score, row) for doc_id, (score, row) in ranked]
            fetch = min(pool, fetch * 4)

    def _rerank(self, vector: np.ndarray, ids: list[int]) -> list[tuple[int, float]]:
        """Exact scores from the stored float32 vectors, best first."""
        stored = self.index.store.vectors_of(ids, len(vector))
        scored = [(pid, float(stored[pid] @ vector)) for pid in ids if pid in stored]
        return sorted(scored, key=lambda t: -t[1])

    def _hits(self, best) -> list[Hit]:
        docs = self.index.store.documents([doc_id for doc_id, _, _ in best])
        hits = []
        for doc_id, score, row in best:
            text, metadata = docs.get(doc_id, ("", {}))
            hits.append(Hit(id=doc_id, score=score, text=text, metadata=metadata,
                            passage=Passage(row.order, row.start, row.end, row.text)))
        return hits


def _check_k(k: int) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise SemsearchError(f"k must be a whole number of at least 1 (got {k!r})")
