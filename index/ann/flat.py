"""``flat``: exact inner-product search (``IndexIDMap2(IndexFlatIP)``), 4·d bytes a vector."""

from __future__ import annotations

from pathlib import Path

import faiss

from .base import Batches, VectorIndex, id_map_ids


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
