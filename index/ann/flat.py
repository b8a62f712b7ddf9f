"""``flat``: exact inner-product search (``IndexIDMap2(IndexFlatIP)``), 4·d bytes a vector.

``score_ids`` scores a few ids exactly from the vectors in memory (their positions found in the
sorted id map), which a selective filter uses instead of a scan of every vector.
"""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

from .base import Batches, VectorIndex, id_map_ids

GATHER_ROWS = 16_384  # vectors copied at a time when scoring ids from memory
IN_MEMORY_SHARE = 0.25  # allowed share of the index scored from memory instead of searched
GATHER_ALWAYS = 512  # allowed passages scored from memory whatever the share (cheaper than any other way)


class FlatIndex(VectorIndex):
    kind = "flat"

    @classmethod
    def empty(cls, dimension: int) -> "FlatIndex":
        return cls(faiss.IndexIDMap2(faiss.IndexFlatIP(dimension)))

    @classmethod
    def build(cls, dimension: int, n: int, batches: Batches, seed: int = 0,
              workdir: Path | None = None) -> "FlatIndex":
        return cls.empty(dimension).add_batches(batches)

    @classmethod
    def owns(cls, index: faiss.Index) -> bool:
        return isinstance(index, faiss.IndexIDMap2) and isinstance(faiss.downcast_index(index.index), faiss.IndexFlat)

    def stored_ids(self):
        return id_map_ids(self.index)

    def add(self, ids, vectors) -> None:
        self._positions = None
        super().add(ids, vectors)

    def remove(self, ids) -> int:
        self._positions = None
        return super().remove(ids)

    def exact_limit(self, settings):
        return max(GATHER_ALWAYS, int(IN_MEMORY_SHARE * self.ntotal))  # a gather costs about 4x a scanned vector

    def score_ids(self, query, ids):
        held_ids, order = self._id_positions()
        ids = np.asarray(ids, dtype=np.int64)
        if not len(held_ids) or not len(ids):
            return ids[:0], np.zeros(0, dtype=np.float32)
        at = np.minimum(np.searchsorted(held_ids, ids), len(held_ids) - 1)
        held = held_ids[at] == ids
        flat = faiss.downcast_index(self.index.index)
        xb = faiss.rev_swig_ptr(flat.get_xb(), self.ntotal * self.dimension).reshape(self.ntotal, self.dimension)
        rows, query = order[at[held]], np.asarray(query, dtype=np.float32)
        scores = np.empty(len(rows), dtype=np.float32)
        for start in range(0, len(rows), GATHER_ROWS):  # bounded memory: a block of vectors at a time
            scores[start : start + GATHER_ROWS] = xb[rows[start : start + GATHER_ROWS]] @ query
        return ids[held], scores

    def _id_positions(self) -> tuple[np.ndarray, np.ndarray]:
        """The held ids sorted, and the position of each in the flat storage (cached until a write)."""
        cached = getattr(self, "_positions", None)
        if cached is None or len(cached[0]) != self.ntotal:
            ids = self.stored_ids()
            if len(ids) < 2 or bool(np.all(ids[1:] > ids[:-1])):  # ids are added in increasing order
                cached = (ids, np.arange(len(ids)))
            else:
                order = np.argsort(ids, kind="stable")
                cached = (ids[order], order)
            self._positions = cached
        return cached
