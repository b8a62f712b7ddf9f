"""``hnsw``: ``IndexHNSWFlat`` (M=32) in an ``IndexIDMap2``, fast approximate search, about
4·d+256 bytes a vector.

HNSW cannot remove vectors, so a delete is a tombstone that every search skips;
the tombstones are not in the file, they are the ids the file holds that the
store no longer does (``agrees_with`` finds them). When a quarter of the index
is tombstones it asks to be rebuilt (compacted) from the stored vectors.
"""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

from .base import Batches, SearchSettings, StoredIds, VectorIndex, id_map_ids

HNSW_M = 32
EF_CONSTRUCTION = 80
DEFAULT_EF_SEARCH = 128
EF_SEARCH_LADDER = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 4096)
COMPACT_AT = 0.25  # share of tombstones that triggers a rebuild


class HNSWIndex(VectorIndex):
    delta_ratio = 0.25  # each delta vector is inserted into the graph again when a reader loads
    kind = "hnsw"

    def __init__(self, index: faiss.Index):
        super().__init__(index)
        self.deleted: set[int] = set()  # tombstones

    @classmethod
    def build(cls, dimension: int, n: int, batches: Batches, seed: int = 0,
              workdir: Path | None = None) -> "HNSWIndex":
        inner = faiss.index_factory(dimension, f"HNSW{HNSW_M},Flat", faiss.METRIC_INNER_PRODUCT)
        faiss.downcast_index(inner).hnsw.efConstruction = EF_CONSTRUCTION
        return cls(faiss.IndexIDMap2(inner)).add_batches(batches)

    @classmethod
    def owns(cls, index: faiss.Index) -> bool:
        return isinstance(index, faiss.IndexIDMap2) and isinstance(faiss.downcast_index(index.index), faiss.IndexHNSWFlat)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal) - len(self.deleted)

    def describe(self) -> str:
        return f"hnsw (M={HNSW_M}, {len(self.deleted)} tombstones)"

    def stored_ids(self) -> np.ndarray:
        return id_map_ids(self.index)

    def ids(self) -> np.ndarray:
        ids = self.stored_ids()
        return ids[~np.isin(ids, self._tombstones())] if self.deleted else ids

    def agrees_with(self, stored: StoredIds) -> bool:
        """Every stored passage is in the file, once; the file's other ids become tombstones."""
        in_file = self.stored_ids()
        wanted = stored.load()
        self.deleted = set(np.setdiff1d(in_file, wanted).tolist())
        return not np.setdiff1d(wanted, in_file).size and len(np.unique(in_file)) == len(in_file)

    def needs_rebuild(self, n: int) -> bool:
        return len(self.deleted) > COMPACT_AT * max(1, int(self.index.ntotal))

    def remove(self, ids) -> int:
        before = len(self.deleted)
        self.deleted.update(int(i) for i in ids)
        return len(self.deleted) - before

    def tuning_ladder(self) -> list[SearchSettings]:
        return [SearchSettings(ef_search=ef) for ef in EF_SEARCH_LADDER]

    def search_parameters(self, k: int, settings: SearchSettings) -> faiss.SearchParameters:
        return faiss.SearchParametersHNSW(efSearch=max(k, settings.ef_search or DEFAULT_EF_SEARCH))

    def searchable(self, allowed):
        if allowed is not None and self.deleted:
            return np.setdiff1d(allowed, self._tombstones())
        return allowed

    def selector(self, allowed):
        if allowed is None and self.deleted:
            return faiss.IDSelectorNot(faiss.IDSelectorBatch(self._tombstones()))  # NOT keeps a reference
        return super().selector(allowed)

    def _tombstones(self) -> np.ndarray:
        return np.fromiter(self.deleted, dtype=np.int64, count=len(self.deleted))
