"""Hybrid retrieval: the BM25 and vector rankings of documents fused by their z-scores.

Owns the fusion and the document ranking of BM25's passages. Both rankings
are of documents, a document at its best passage's score; each contributes
its best ``max(k, DEPTH)`` documents. Each ranking's scores are standardised
over the documents it returned (z-scores: minus their mean, over their
standard deviation), so that cosines and BM25 scores are on one scale, and a
document's fused score is the mean of its two z-scores, a document missing
from one ranking taking that ranking's lowest (0 for BM25 where it matched
fewer documents than asked: the others share no term with the query) (CombSUM with z-score
normalisation, Montague and Aslam, CIKM 2001; a convex combination with
equal weights, as Bruch, Gai and Ingber, TOIS 2023, found better than
reciprocal rank fusion). Applied to the same captured rankings as reciprocal
rank fusion (k = 60, what semsearch used before; a one-off script on the
indexes of ``bench/hybrid.py``, Intel Xeon family 6 model 167, nDCG@10, the
embedded model), it was better on every set and layer tried: SciFact 0.627 -> 0.666 and StackFAQ 0.900 ->
0.914 at whitened layer -2, 0.718 -> 0.727 and 0.915 -> 0.935 at layer -1.
A fused hit names the passage of the ranking where its document ranked
better (the vector one on a tie). ``Searcher.search(..., hybrid=True)`` uses
it; the BM25 index itself is ``index.lexical.bm25``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from index.records import Passage

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from index.lexical.bm25 import LexicalIndex
    from index.storage.snapshot import Snapshot

DEPTH = 100  # documents each ranking contributes to the fusion (at least k)


@dataclass
class Ranked:
    """A document in one ranking: its best passage and that passage's score."""

    id: str
    score: float
    passage: Passage


@dataclass
class Fused:
    """A document of the fused ranking: its fused score (the mean of its z-scores), the passage
    shown, and its rank (from 1) in each ranking, None where that ranking did not hold it."""

    id: str
    score: float
    passage: Passage
    dense_rank: int | None = None
    lexical_rank: int | None = None


def z_scores(scores: Sequence[float]) -> list[float]:
    """``scores`` standardised (minus their mean, over their standard deviation); all 0 when they
    are all equal."""
    if not scores:
        return []
    mean = sum(scores) / len(scores)
    spread = math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores))
    return [0.0] * len(scores) if spread == 0 else [(s - mean) / spread for s in scores]


def fuse(dense: Sequence[Ranked], lexical: Sequence[Ranked], k: int, *, lexical_complete: bool = False
         ) -> list[Fused]:
    """The ``k`` best documents of two rankings (best first) by the mean of their z-scores in each
    (a ranking that does not hold a document gives it its lowest). ``lexical_complete``: the
    lexical ranking holds every document that shares a term with the query (BM25 ran out before
    the depth asked), so a document missing from it scores 0 there, and that 0 is standardised
    with the others. Ties go to the better single rank, then to the document id."""
    entries: dict[str, Fused] = {}
    normalised: dict[str, list[float | None]] = {}
    dense_z = z_scores([r.score for r in dense])
    lexical_z = z_scores([r.score for r in lexical] + ([0.0] if lexical_complete else []))
    for rank, (r, z) in enumerate(zip(dense, dense_z), start=1):
        if r.id not in entries:
            entries[r.id], normalised[r.id] = Fused(r.id, 0.0, r.passage, dense_rank=rank), [z, None]
    for rank, (r, z) in enumerate(zip(lexical, lexical_z), start=1):
        entry = entries.setdefault(r.id, Fused(r.id, 0.0, r.passage))
        pair = normalised.setdefault(r.id, [None, None])
        if entry.lexical_rank is None:
            entry.lexical_rank, pair[1] = rank, z
            if entry.dense_rank is not None and rank < entry.dense_rank:
                entry.passage = r.passage
    floors = (min(dense_z, default=0.0), lexical_z[-1] if lexical_complete else min(lexical_z, default=0.0))
    for doc_id, entry in entries.items():
        entry.score = sum(z if z is not None else floor for z, floor in zip(normalised[doc_id], floors)) / 2

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

