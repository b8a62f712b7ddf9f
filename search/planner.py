"""How a filtered search runs: exact scoring of a few passages, or the ANN index with an id selector.

The choice is made here, per query, from the number of passages the filter
allows (``Snapshot.allowed_ids``, computed through the filter indexes):

- up to ``VectorIndex.exact_limit`` passages (the point where gathering them
  costs what the index's own search would: a quarter of a flat index; on IVF
  about 1/25 of the vectors its probed lists hold): the allowed passages are
  scored exactly from the vectors in memory (``VectorIndex.score_ids``: a
  gather and one matrix product, no scan of the other vectors);
- else at most ``EXACT_MAX`` passages: their stored vectors are scored exactly
  (no ANN search; the vectors read from SQLite);
- more: the vector index is searched with the allowed ids as FAISS's id
  selector, fetching more passages until ``k`` documents are found; an
  approximate index (IVF, HNSW) that still returns fewer than ``k`` documents
  while more are allowed is answered exactly when the allowed set is at most
  ``EXACT_FALLBACK_MAX`` passages.

So ``k`` hits come back whenever ``k`` documents match (up to the fallback's
bound on an approximate index).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from index.records import Passage

EXACT_MAX = 512  # allowed passages scored exactly instead of an ANN search
EXACT_FALLBACK_MAX = 50_000  # allowed passages an approximate index may hand over to exact scoring


def best_passages(snap: Any, vector: np.ndarray, k: int, allowed: np.ndarray | None, settings: Any
                  ) -> list[tuple[str, float, Passage]]:
    """Best passage per document for the top ``k`` documents: ``[(doc_id, score, passage)]``."""
    pool = snap.vectors.ntotal if allowed is None else len(allowed)
    if pool == 0:
        return []
    if allowed is not None and pool <= snap.vectors.exact_limit(snap.settings(settings)):
        scored = snap.vectors.score_ids(snap.whiten(vector), allowed)  # the vectors in memory, no scan
        if scored is not None:
            return exact_scored(snap, *scored, k)
    if allowed is not None and pool <= EXACT_MAX:
        return exact(snap, vector, k, allowed)
    fetch = min(pool, snap.candidates(k))
    while True:
        found = snap.search(vector, fetch, allowed, settings)
        if snap.needs_rerank:  # compressed scores: re-rank the candidates exactly
            found = snap.rerank(vector, [pid for pid, _ in found])
        best = _per_document(snap, found)
        if len(best) >= k or fetch >= pool:
            if (allowed is not None and len(best) < k and len(found) < pool
                    and pool <= EXACT_FALLBACK_MAX):  # an approximate index missed allowed passages
                return exact(snap, vector, k, allowed)
            return _top(best, k)
        fetch = min(pool, fetch * 4)


def exact(snap: Any, vector: np.ndarray, k: int, ids: np.ndarray) -> list[tuple[str, float, Passage]]:
    """The top ``k`` documents among the passages ``ids``, scored from their stored vectors (the
    method's raw vectors, whitened like the query when the index whitens: the scores FAISS gives)."""
    stored = snap.store.vectors_of([int(i) for i in ids], len(vector))
    if not stored:
        return []
    pids = np.fromiter(stored, dtype=np.int64, count=len(stored))
    return exact_scored(snap, pids, snap.whiten(np.stack(list(stored.values()))) @ snap.whiten(vector), k)


def exact_scored(snap: Any, pids: np.ndarray, scores: np.ndarray, k: int) -> list[tuple[str, float, Passage]]:
    """The top ``k`` documents of passages scored exactly (rows fetched for the best ones only)."""
    if not len(pids):
        return []
    want = max(4 * k, 64)
    while True:  # rows of the best passages only, until k documents
        want = min(want, len(pids))
        top = np.argpartition(-scores, want - 1)[:want] if want < len(pids) else np.arange(len(pids))
        top = top[np.argsort(-scores[top], kind="stable")]
        best = _per_document(snap, [(int(pids[j]), float(scores[j])) for j in top])
        if len(best) >= k or want == len(pids):
            return _top(best, k)
        want *= 4


def _per_document(snap: Any, found: list[tuple[int, float]]) -> dict[str, tuple[float, Passage]]:
    rows = snap.passages([pid for pid, _ in found])
    best: dict[str, tuple[float, Passage]] = {}
    for pid, score in found:
        if pid in rows:
            doc_id, passage = rows[pid]
            best.setdefault(doc_id, (score, passage))
    return best


def _top(best: dict[str, tuple[float, Passage]], k: int) -> list[tuple[str, float, Passage]]:
    ranked = sorted(best.items(), key=lambda kv: (-kv[1][0], kv[0]))[:k]
    return [(doc_id, score, passage) for doc_id, (score, passage) in ranked]
