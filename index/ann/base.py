"""What every vector backend must do, and the parts they share.

A backend wraps one FAISS inner-product index whose ids are passage row ids.
It must: build itself (train when its type needs it) from streamed
``(ids, vectors)`` batches, add and remove by id, search with an optional
allowed-id filter and its own search settings, describe itself, say whether
a FAISS object read from a file is of its type, say whether it agrees with the
passage ids the store holds, and say when it should be rebuilt from the
stored vectors. Saving is atomic for every backend (temporary file, fsync,
rename, fsync of the folder), so a reader never loads a half-written file.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar, Iterator, Optional

import faiss
import numpy as np

from ..errors import SemsearchError
from ..files import fsync_file, write_atomically

Batches = Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]]
DATA_SUFFIX = ".ivfdata"  # a base's data file next to its header, for a backend that maps its data (ivf-disk)
SINGLE_THREAD_UP_TO = 4  # queries searched without OpenMP threads
_DEFAULT_THREADS = faiss.omp_get_max_threads()


@dataclass
class SearchSettings:
    """Approximate-search knobs; None means the backend's default, tuned for recall@10 >= 0.95."""

    ef_search: int | None = None
    nprobe: int | None = None
    rerank: int | None = None  # candidates re-ranked with the exact vectors (types with approximate scores)


@dataclass(frozen=True)
class StoredIds:
    """The passage ids the store holds: their count and sum (cheap), and all of them on demand."""

    count: int
    id_sum: int
    load: Callable[[], np.ndarray]


class VectorIndex(ABC):
    """A FAISS index of unit vectors keyed by passage id, searched by inner product (cosine)."""

    kind: ClassVar[str]
    min_training: ClassVar[int] = 0  # vectors needed to build this type; below it the index stays flat
    rerank: ClassVar[bool] = False  # scores are approximate: re-rank candidates with the stored vectors
    # A commit writes a delta file until the deltas since the base outgrow this share of the base file
    # (bytes); then a new base. Readers apply the deltas when they load, so a type whose additions are
    # slow to apply (HNSW) keeps them smaller.
    delta_ratio: ClassVar[float] = 1.5
    max_delta_bytes: ClassVar[Optional[int]] = None  # and never more than this many bytes (None: no cap)

    def __init__(self, index: faiss.Index):
        self.index = index

    # --- construction -------------------------------------------------------
    @classmethod
    @abstractmethod
    def build(cls, dimension: int, n: int, batches: Batches, seed: int = 0,
              workdir: Path | None = None) -> "VectorIndex":
        """An index over everything ``batches()`` yields (``n`` vectors).

        ``batches`` may be called more than once (a training sample, then the
        vectors), so memory holds the index, not a copy of the vectors.
        ``workdir`` (the index folder) is where a backend that keeps its data
        in files writes them while building (temporary names until ``save``).
        """

    @classmethod
    def open_file(cls, path: Path) -> "VectorIndex | None":
        """This type's index read from ``path`` when it needs more than ``faiss.read_index`` (files
        next to it); None for the others, which ``index.ann.registry.load`` reads the plain way."""
        return None

    @classmethod
    @abstractmethod
    def owns(cls, index: faiss.Index) -> bool:
        """True when a FAISS object read from a file is an index of this type."""

    # --- properties -------------------------------------------------------------
    @property
    def dimension(self) -> int:
        return int(self.index.d)

    @property
    def ntotal(self) -> int:
        """Live vectors."""
        return int(self.index.ntotal)

    def describe(self) -> str:
        return self.kind

    def ids(self) -> np.ndarray:
        """Every live id."""
        return self.stored_ids()

    @abstractmethod
    def stored_ids(self) -> np.ndarray:
        """Every id in the FAISS index, deleted ones it still holds included."""

    def agrees_with(self, stored: StoredIds) -> bool:
        """True when this index holds exactly the stored passages' vectors."""
        return self.ntotal == stored.count and int(self.ids().sum()) == stored.id_sum

    def tuning_ladder(self) -> list[SearchSettings]:
        """Search settings to try when tuning for a recall target, cheapest first (``index.ann.tuning``);
        empty for an exact index."""
        return []

    def needs_rebuild(self, n: int) -> bool:
        """True when, at ``n`` stored vectors, this index should be rebuilt from them."""
        return False

    def compaction_due(self, delta_bytes: int, base_bytes: int) -> bool:
        """True when deltas of ``delta_bytes`` over a base of ``base_bytes`` should become a new base."""
        limit = self.delta_ratio * base_bytes
        if self.max_delta_bytes is not None:
            limit = min(limit, self.max_delta_bytes)
        return delta_bytes > limit

    # --- updates ---------------------------------------------------------------
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(ids, dtype=np.int64))

    def add_batches(self, batches: Batches) -> "VectorIndex":
        """Add everything ``batches()`` yields; returns this index."""
        for ids, vecs in batches():
            self.add(ids, vecs)
        return self

    def remove(self, ids) -> int:
        """Remove vectors by id; returns how many were there."""
        ids = np.asarray(list(ids), dtype=np.int64)
        if not len(ids):
            return 0
        return int(self.index.remove_ids(faiss.IDSelectorBatch(ids)))

    # --- search ------------------------------------------------------------------
    def score_ids(self, query: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Exact scores of one query against the vectors of ``ids`` that this index holds, read from
        memory without a scan: ``(ids held, scores)``; None where a type cannot (the caller then
        reads the stored vectors)."""
        return None

    def exact_limit(self, settings: SearchSettings) -> int:
        """The most allowed ids that ``score_ids`` scores faster than a search of this index with
        them as its id selector (0: it cannot)."""
        return 0

    def candidates(self, k: int) -> int:
        """How many passages to fetch to find ``k`` documents (more where scores are approximate)."""
        return max(2 * k, k + 20)

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None,
               settings: SearchSettings | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` ``(scores, ids)`` per query; ``allowed`` restricts the search to those ids.

        Missing results have id -1.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        allowed = self.searchable(allowed)
        k = max(1, min(k, self.ntotal if allowed is None else len(allowed)))
        params = self.search_parameters(k, settings or SearchSettings())
        keep = self.selector(allowed)  # referenced until the search returns
        if keep is not None:
            params.sel = keep
        with search_threads(len(queries)):
            return self.index.search(queries, k, params=params)

    def search_parameters(self, k: int, settings: SearchSettings) -> faiss.SearchParameters:
        return faiss.SearchParameters()

    def searchable(self, allowed: np.ndarray | None) -> np.ndarray | None:
        """The allowed ids that this index can return (None: no filter)."""
        return allowed

    def selector(self, allowed: np.ndarray | None):
        return None if allowed is None else faiss.IDSelectorBatch(np.asarray(allowed, dtype=np.int64))

    # --- files -------------------------------------------------------------
    def save(self, path: Path) -> Path:
        """Write the index to ``path`` atomically and return ``path``."""

        def write(tmp: Path) -> None:
            try:
                faiss.write_index(self.index, str(tmp))
            except RuntimeError as exc:  # FAISS reports a full disk this way
                raise SemsearchError(f"cannot write {path}: {str(exc).strip().splitlines()[-1]}") from None
            fsync_file(tmp)

        return write_atomically(Path(path), write)


@contextmanager
def search_threads(n_queries: int) -> Iterator[None]:
    """Search ``n_queries`` on one OpenMP thread when they are few.

    A few queries gain nothing from OpenMP threads, and those threads then spin for a while on
    the cores the next query's embedding needs (measured on a 2-core Zen 1: query p50 15 -> 9 ms).
    The setting is process-wide, so it always goes back to the thread count this process started
    with, never to whatever a concurrent search had set.
    """
    if n_queries > SINGLE_THREAD_UP_TO:
        yield
        return
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(_DEFAULT_THREADS)


def id_map_ids(index: faiss.IndexIDMap2) -> np.ndarray:
    """The ids of an ``IndexIDMap2``, in insertion order."""
    return faiss.vector_to_array(index.id_map).astype(np.int64)
