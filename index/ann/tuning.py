"""Search settings tuned to a recall target, measured on the index's own vectors.

An approximate index (hnsw, ivf, ivfpq) answers from part of the data; how
much it must look at (efSearch, nprobe, and for ivfpq how many candidates are
re-ranked with the exact vectors) depends on the data, not only on its size:
on clustered, near-duplicate data the fixed defaults lose recall. ``tune``
takes queries made from passages of the index itself, finds their exact top-k
by brute force over every stored vector, and walks the backend's ladder of
settings (``VectorIndex.tuning_ladder``, cheapest first) until recall@k
reaches the target. The result (``Tuning``) is recorded in the index and used
by every search unless the caller gives its own ``ef_search``/``nprobe``.

A stored passage is an easier query than a real question: it sits in its own
dense cluster. ``proxy_queries`` moves each sampled passage off itself by
random noise, to cosine ``PROXY_COSINE`` with it. Measured on SciFact's
sentences with its claims as the real queries (embedded model,
``bench/recall.py --proxies``), that proxy's recall tracked the claims'
within 0.015 at every nprobe (8 to 128) and efSearch (16 to 128), where the
passages themselves overstated it by up to 0.08.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator, Mapping

import faiss
import numpy as np

from .registry import SearchSettings, VectorIndex

QUERIES = 300  # sampled passages
PROXY_COSINE = 0.75  # a proxy query's cosine to the passage it was made from
K = 10
RETUNE_GROWTH = 2.0  # an index tuned at n passages is tuned again at this many times n


@dataclass(frozen=True)
class Tuning:
    """The settings chosen for one vector index, and what they measured."""

    index: str  # VectorIndex.describe() when tuned (its type and size of structure)
    kind: str
    settings: dict[str, int]
    recall: float  # recall@k of the chosen settings on the sample
    target: float
    reached: bool  # False: no setting on the ladder reached the target (the best one is kept)
    passages: int  # vectors in the index when tuned
    queries: int
    k: int
    seconds: float

    def as_info(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_info(cls, info: Mapping[str, Any] | None) -> "Tuning | None":
        if not info:
            return None
        try:
            return cls(**{k: info[k] for k in cls.__dataclass_fields__})
        except (KeyError, TypeError):
            return None

    def search_settings(self) -> SearchSettings:
        return SearchSettings(**self.settings)


def due(vectors: VectorIndex, recorded: Tuning | None, target: float) -> bool:
    """True when ``vectors`` should be (re)tuned: approximate, and never tuned for this index
    structure and target, or grown ``RETUNE_GROWTH`` times since."""
    if not vectors.tuning_ladder():
        return False
    if recorded is None or recorded.index != vectors.describe() or recorded.target != target:
        return True
    return vectors.ntotal >= RETUNE_GROWTH * max(1, recorded.passages)


def proxy_queries(passages: np.ndarray, seed: int = 0) -> np.ndarray:
    """Unit queries at cosine about ``PROXY_COSINE`` to the given unit passage vectors: each passage
    plus isotropic Gaussian noise of norm tan(arccos(PROXY_COSINE))."""
    rng = np.random.default_rng(seed)
    passages = np.asarray(passages, dtype=np.float32)
    dim = passages.shape[1]
    scale = float(np.tan(np.arccos(PROXY_COSINE)))
    noisy = passages + scale * rng.standard_normal(passages.shape).astype(np.float32) / np.sqrt(dim)
    return np.ascontiguousarray(noisy / np.linalg.norm(noisy, axis=1, keepdims=True), dtype=np.float32)


def exact_neighbours(batches: Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]], queries: np.ndarray,
                     k: int) -> np.ndarray:
    """The exact top ``k`` ids of each query (-1 where fewer), streaming the stored vectors through a
    brute-force search (memory: one batch, not the whole index)."""
    best_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_ids = np.full((len(queries), k), -1, dtype=np.int64)
    for ids, vecs in batches():
        if not len(ids):
            continue
        scores, rows = faiss.knn(queries, np.ascontiguousarray(vecs, dtype=np.float32), min(k, len(ids)),
                                 metric=faiss.METRIC_INNER_PRODUCT)
        cand_scores = np.concatenate([best_scores, scores], axis=1)
        cand_ids = np.concatenate([best_ids, np.asarray(ids, dtype=np.int64)[rows]], axis=1)
        order = np.argsort(-cand_scores, axis=1, kind="stable")[:, :k]
        best_scores = np.take_along_axis(cand_scores, order, axis=1)
        best_ids = np.take_along_axis(cand_ids, order, axis=1)
    return best_ids


def measure(vectors: VectorIndex, settings: SearchSettings, queries: np.ndarray, truth: np.ndarray,
            vectors_of: Callable[[np.ndarray], dict[int, np.ndarray]], k: int = K) -> float:
    """recall@k of ``vectors`` searched with ``settings`` (re-ranked with the exact stored vectors
    where its scores are approximate, as the searcher does) against ``truth``."""
    fetch = k
    if vectors.rerank:
        fetch = max(fetch, vectors.candidates(k), settings.rerank or 0)
    _, found = vectors.search(queries, fetch, None, settings)
    hits = total = 0
    for row in range(len(queries)):
        ids = [int(i) for i in found[row] if i >= 0]
        if vectors.rerank and ids:
            stored = vectors_of(np.asarray(ids, dtype=np.int64))
            ids = sorted((i for i in ids if i in stored), key=lambda i: -float(stored[i] @ queries[row]))
        want = {int(i) for i in truth[row] if i >= 0}
        hits += len(want & set(ids[:k]))
        total += len(want)
    return hits / max(1, total)


def tune(vectors: VectorIndex, queries: np.ndarray,
         batches: Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]],
         vectors_of: Callable[[np.ndarray], dict[int, np.ndarray]], target: float, k: int = K) -> Tuning | None:
    """The cheapest settings on ``vectors``' ladder reaching recall@k >= ``target`` for ``queries``
    (``proxy_queries`` of sampled passages); None for an exact index. ``batches`` streams every
    stored ``(ids, vectors)``; ``vectors_of`` looks stored vectors up by id (for re-ranking)."""
    ladder = vectors.tuning_ladder()
    if not ladder or not len(queries):
        return None
    started = time.monotonic()
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    truth = exact_neighbours(batches, queries, k)
    best: tuple[float, SearchSettings] | None = None
    for settings in ladder:
        recall = measure(vectors, settings, queries, truth, vectors_of, k)
        if best is None or recall > best[0]:
            best = (recall, settings)
        if recall >= target:
            best = (recall, settings)
            break
    recall, settings = best
    chosen = {key: value for key, value in asdict(settings).items() if value is not None}
    return Tuning(index=vectors.describe(), kind=vectors.kind, settings=chosen, recall=round(recall, 4),
                  target=target, reached=recall >= target, passages=vectors.ntotal, queries=len(queries), k=k,
                  seconds=round(time.monotonic() - started, 2))
