"""Hybrid retrieval: the BM25 and vector rankings of documents fused by reciprocal rank (RRF).

Owns the fusion and the document ranking of BM25's passages. Both rankings
are of documents: a document's rank is its best passage's. The fused score of
a document is ``sum(1 / (RRF_K + rank))`` over the rankings it appears in
(rank from 1; a ranking that does not hold it adds nothing), with
``RRF_K = 60`` as in Cormack, Clarke and Büttcher (SIGIR 2009). Each ranking
contributes its best ``max(k, DEPTH)`` documents. A fused hit names the passage
of the ranking where its document ranked better (the vector one on a tie).
``Searcher.search(..., hybrid=True)`` uses it; the BM25 index itself is
``index.lexical.bm25``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from index.records import Passage

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from index.lexical.bm25 import LexicalIndex
    from index.storage.snapshot import Snapshot

RRF_K = 60  # the constant of reciprocal rank fusion: larger values flatten the weight of the top ranks
DEPTH = 100  # documents each ranking contributes to the fusion (at least k)


@dataclass
class Ranked:
    """A document in one ranking: its best passage and that passage's score."""

    id: str
    score: float
    passage: Passage


@dataclass
class Fused:
    """A document of the fused ranking: its RRF score, the passage shown, and its rank (from 1) in
    each ranking, None where that ranking did not hold it."""

    id: str
    score: float
    passage: Passage
    dense_rank: int | None = None
    lexical_rank: int | None = None


def rrf_score(ranks: Sequence[int | None], rrf_k: int = RRF_K) -> float:
    """``sum(1 / (rrf_k + rank))`` over the ranks that are not None."""
    return sum(1.0 / (rrf_k + r) for r in ranks if r is not None)


def fuse(dense: Sequence[Ranked], lexical: Sequence[Ranked], k: int, rrf_k: int = RRF_K) -> list[Fused]:
    """The ``k`` best documents of two rankings (best first) by reciprocal rank fusion. Ties go to
    the better single rank, then to the document id."""
    entries: dict[str, Fused] = {}
    for rank, r in enumerate(dense, start=1):
        entries.setdefault(r.id, Fused(r.id, 0.0, r.passage, dense_rank=rank))
    for rank, r in enumerate(lexical, start=1):
        entry = entries.setdefault(r.id, Fused(r.id, 0.0, r.passage))
        if entry.lexical_rank is None:
            entry.lexical_rank = rank
            if entry.dense_rank is not None and rank < entry.dense_rank:
                entry.passage = r.passage
    for entry in entries.values():
        entry.score = rrf_score((entry.dense_rank, entry.lexical_rank), rrf_k)

    def best_rank(e: Fused) -> int:
        return min(r for r in (e.dense_rank, e.lexical_rank) if r is not None)

    return sorted(entries.values(), key=lambda e: (-e.score, best_rank(e), e.id))[:k]


def best_per_document(found: Sequence[tuple[int, float]], rows: dict[int, tuple[str, Passage]]) -> list[Ranked]:
    """Passages ``(id, score)`` (best first) as documents, each at its best passage's place."""
    best: dict[str, Ranked] = {}
    for pid, score in found:
        if pid in rows:
            doc_id, passage = rows[pid]
            best.setdefault(doc_id, Ranked(doc_id, score, passage))
    return list(best.values())


def lexical_ranking(snap: "Snapshot", lexical: "LexicalIndex", query: str, n: int,
                    allowed: "np.ndarray | None") -> list[Ranked]:
    """The ``n`` best documents for ``query`` by BM25 (only those sharing a term with it), among the
    passages ``allowed`` by a metadata filter; fetches more passages until ``n`` documents are found
    or BM25 has no more."""
    fetch = max(4 * n, 16)
    while True:
        found = lexical.search(query, fetch, allowed)
        ranked = best_per_document(found, snap.passages([pid for pid, _ in found]))
        if len(ranked) >= n or len(found) < fetch:
            return ranked[:n]
        fetch *= 4

