"""``ivf``: ``IndexIVFFlat`` with 4·√N lists, exact scores within the probed lists.

IVF indexes store the passage ids themselves (and remove by them). ``score_ids``
scores a few ids exactly, their vectors gathered from the lists through a FAISS
direct map (a hash table from id to list and offset, about 50 bytes a vector,
made at the first such call and dropped at the next write); the planner uses
it where the filter allows fewer passages than a search would scan. They need
training data: below ``min_training`` vectors the index stays flat (see
``index.ann.registry.resolve_type``), and when the index has grown to need more
than twice its lists it asks to be rebuilt with a list count for its size.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path

import faiss
import numpy as np

from .base import Batches, SearchSettings, VectorIndex, search_threads

POINTS_PER_LIST = 39  # FAISS warns below 39 training points per centroid
GATHER_ROWS = 16_384  # vectors gathered at a time when scoring ids
# A gathered vector (hash lookup, copy from its list) costs about 20 scanned ones with an id
# selector: 200,000 passages, nprobe 1,228 of 1,431 lists, 1 % allowed: gather 2.0 ms, search
# 2.9 ms; 5 %: 7.6 ms against 6.9 ms (Xeon family 6 model 167, bench/filters.py's index).
GATHER_COST = 25
_DIRECT_MAP = threading.Lock()


def n_lists(n: int) -> int:
    """IVF lists: 4·√N (FAISS's guideline is 4·√N to 16·√N), at least 39 training points each."""
    return max(1, min(int(4 * math.sqrt(max(n, 1))), n // POINTS_PER_LIST))


def default_nprobe(nlist: int) -> int:
    return max(8, min(nlist, int(math.ceil(nlist / 20))))


def nprobe_ladder(nlist: int) -> list[int]:
    """1, 2, 3, 4, 6, 8, 12, 16, ... (steps of about 1.5x) up to every list."""
    out, n = [], 1
    while n < nlist:
        out.append(n)
        n = max(n + 1, int(round(n * 1.5)))
    return out + [nlist]


def list_ids(invlists) -> np.ndarray:
    """Every id in a FAISS ``InvertedLists`` (in memory or on disk), list by list."""
    parts = [faiss.rev_swig_ptr(invlists.get_ids(i), invlists.list_size(i)).copy()
             for i in range(invlists.nlist) if invlists.list_size(i)]
    return np.concatenate(parts).astype(np.int64) if parts else np.empty(0, dtype=np.int64)


def training_sample(batches: Batches, n: int, size: int, seed: int) -> np.ndarray:
    """A uniform random sample of about ``size`` vectors, drawn while streaming."""
    rng = np.random.default_rng(seed)
    keep = min(1.0, size / max(n, 1))
    parts = [vecs[rng.random(len(vecs)) < keep] for _, vecs in batches()]
    return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)


class IVFIndex(VectorIndex):
    kind = "ivf"
    min_training = POINTS_PER_LIST * 16

    @classmethod
    def factory(cls, dimension: int, nlist: int) -> str:
        return f"IVF{nlist},Flat"

    @classmethod
    def build(cls, dimension: int, n: int, batches: Batches, seed: int = 0,
              workdir: Path | None = None) -> "IVFIndex":
        nlist = n_lists(n)
        inner = faiss.index_factory(dimension, cls.factory(dimension, nlist), faiss.METRIC_INNER_PRODUCT)
        cls.configure(faiss.downcast_index(inner))
        inner.train(training_sample(batches, n, max(64 * nlist, 256 * 64), seed))
        faiss.downcast_index(inner).nprobe = default_nprobe(nlist)
        return cls(inner).add_batches(batches)

    @classmethod
    def configure(cls, ivf: faiss.Index) -> None:
        """Settings of a new index before training."""

    @classmethod
    def owns(cls, index: faiss.Index) -> bool:
        return (isinstance(index, faiss.IndexIVFFlat)
                and not isinstance(faiss.downcast_InvertedLists(index.invlists), faiss.OnDiskInvertedLists))

    @property
    def inner(self) -> faiss.Index:
        return faiss.downcast_index(self.index)

    @property
    def nlist(self) -> int:
        return int(self.inner.nlist)

    def describe(self) -> str:
        return f"{self.kind} ({self.nlist} lists)"

    def stored_ids(self) -> np.ndarray:
        return list_ids(self.inner.invlists)

    def needs_rebuild(self, n: int) -> bool:
        return n_lists(n) > 2 * self.nlist

    def tuning_ladder(self) -> list[SearchSettings]:
        return [SearchSettings(nprobe=n) for n in nprobe_ladder(self.nlist)]

    # --- exact scores of a few ids ----------------------------------------------------------
    def exact_limit(self, settings: SearchSettings) -> int:
        nprobe = min(self.nlist, settings.nprobe or int(self.inner.nprobe))
        return int(self.ntotal * nprobe / self.nlist / GATHER_COST)  # the vectors a search scans

    def score_ids(self, query, ids):
        ids = np.asarray(ids, dtype=np.int64)
        held_ids = self._mapped_ids()
        at = np.minimum(np.searchsorted(held_ids, ids), max(len(held_ids) - 1, 0))
        ids = ids[held_ids[at] == ids] if len(held_ids) else ids[:0]
        query = np.asarray(query, dtype=np.float32)
        scores = np.empty(len(ids), dtype=np.float32)
        with search_threads(1):  # FAISS gathers over 1,000 ids on OpenMP threads: 9x slower at 2,000 here
            for start in range(0, len(ids), GATHER_ROWS):  # bounded memory: a block of vectors at a time
                block = ids[start : start + GATHER_ROWS]
                scores[start : start + len(block)] = self.inner.reconstruct_batch(block) @ query
        return ids, scores

    def _mapped_ids(self) -> np.ndarray:
        """The held ids, sorted, with FAISS's id -> (list, offset) map made (kept until a write)."""
        with _DIRECT_MAP:
            held = getattr(self, "_held", None)
            if held is None:
                self.inner.set_direct_map_type(faiss.DirectMap.Hashtable)
                held = self._held = np.sort(self.stored_ids())
            return held

    def _drop_map(self) -> None:
        """Writes and saved files go without the direct map (FAISS removes by a hash table's ids
        only through an id array, and the map would be written into the file)."""
        with _DIRECT_MAP:
            if getattr(self, "_held", None) is not None:
                self.inner.set_direct_map_type(faiss.DirectMap.NoMap)
                self._held = None

    def add(self, ids, vectors) -> None:
        self._drop_map()
        super().add(ids, vectors)

    def remove(self, ids) -> int:
        self._drop_map()
        return super().remove(ids)

    def save(self, path: Path) -> Path:
        self._drop_map()
        return super().save(path)

    def search_parameters(self, k: int, settings: SearchSettings) -> faiss.SearchParameters:
        return faiss.SearchParametersIVF(nprobe=settings.nprobe or int(self.inner.nprobe))
