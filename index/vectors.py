"""The vector index: a FAISS inner-product index whose ids are passage row ids.

Types (``--index-type``):

- ``flat``: exact search (``IndexFlatIP``), 4·d bytes a vector.
- ``hnsw``: ``IndexHNSWFlat`` (M=32), fast approximate search, about 4·d+256
  bytes a vector. HNSW cannot remove vectors, so deletes are tombstones that
  the search skips; the index is compacted when a quarter is tombstones.
- ``ivf``: ``IndexIVFFlat`` with 4·√N lists, exact scores within the probed lists.
- ``ivfpq``: ``IndexIVFPQ`` (d/8 sub-quantisers of 8 bits), about d/8+8 bytes a
  vector; the searcher re-ranks its candidates with the exact stored vectors.
- ``auto``: following FAISS's guidelines, exact ``flat`` below 10,000 vectors,
  ``ivf`` below 2,000,000, ``ivfpq`` above.

Flat and HNSW sit in an ``IndexIDMap2`` so that their ids are the passage
ids; IVF indexes store the passage ids themselves (and remove by them).
IVF types need training data; until there is enough, the index stays flat.

Files are written atomically (temporary file, fsync, rename, fsync of the
folder) and named after the store generation they match
(``vectors-<generation>.faiss``), so a reader never loads a half-written file
and a file that lags the database is recognised by its name.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import faiss
import numpy as np

from .errors import IndexCorruptError, SemsearchError

FILE_PATTERN = re.compile(r"^vectors-(\d+)\.faiss$")
INDEX_TYPES = ("flat", "hnsw", "ivf", "ivfpq", "auto")
HNSW_M = 32
FLAT_BELOW = 10_000
IVFPQ_FROM = 2_000_000
Batches = Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]]


def file_name(generation: int) -> str:
    return f"vectors-{generation}.faiss"


def resolve_type(kind: str, n: int) -> str:
    """The concrete type for ``kind`` at ``n`` vectors (``auto`` by size; IVF needs enough data)."""
    if kind not in INDEX_TYPES:
        raise SemsearchError(f"unknown index type {kind!r}; choose one of {', '.join(INDEX_TYPES)}")
    if kind == "auto":
        kind = "flat" if n < FLAT_BELOW else "ivf" if n < IVFPQ_FROM else "ivfpq"
    if kind in ("ivf", "ivfpq") and n < min_training(kind, n):
        return "flat"
    return kind


def n_lists(n: int) -> int:
    """IVF lists: 4·√N (FAISS's guideline is 4·√N to 16·√N), at least 39 training points each."""
    return max(1, min(int(4 * math.sqrt(max(n, 1))), n // 39))


def min_training(kind: str, n: int) -> int:
    if kind == "ivfpq":
        return 256 * 39  # 8-bit codebooks
    if kind == "ivf":
        return 39 * 16
    return 0


def pq_subquantizers(d: int) -> int:
    """The largest divisor of d that is at most d/8 (48 for 384-d)."""
    return max(m for m in range(1, d // 8 + 1) if d % m == 0)


@dataclass
class SearchSettings:
    """Approximate-search knobs; None means the default tuned for recall@10 >= 0.95."""

    ef_search: int | None = None
    nprobe: int | None = None


DEFAULT_EF_SEARCH = 128


def default_nprobe(nlist: int) -> int:
    return max(8, min(nlist, int(math.ceil(nlist / 20))))


class VectorIndex:
    """A FAISS index of unit vectors keyed by passage id, searched by inner product (cosine)."""

    def __init__(self, index: faiss.Index, kind: str = "flat"):
        self.index = index
        self.kind = kind
        self.deleted: set[int] = set()  # hnsw tombstones

    # --- construction -------------------------------------------------------
    @classmethod
    def empty(cls, dimension: int) -> "VectorIndex":
        return cls(faiss.IndexIDMap2(faiss.IndexFlatIP(dimension)), "flat")

    @classmethod
    def from_batches(cls, dimension: int, batches: Iterable[tuple[np.ndarray, np.ndarray]]) -> "VectorIndex":
        """A flat index from ``(ids, vectors)`` batches (as the store streams them)."""
        vi = cls.empty(dimension)
        for ids, vecs in batches:
            vi.add(ids, vecs)
        return vi

    @classmethod
    def build(cls, kind: str, dimension: int, n: int, batches: Batches, seed: int = 0) -> "VectorIndex":
        """An index of type ``kind`` (resolved for ``n`` vectors) over everything ``batches()`` yields.

        ``batches`` is called once to draw the training sample (IVF types) and
        once more to add the vectors, so memory holds the index, not a copy.
        """
        concrete = resolve_type(kind, n)
        if concrete == "flat":
            return cls.from_batches(dimension, batches())
        if concrete == "hnsw":
            inner = faiss.index_factory(dimension, f"HNSW{HNSW_M},Flat", faiss.METRIC_INNER_PRODUCT)
            faiss.downcast_index(inner).hnsw.efConstruction = 80
        else:
            nlist = n_lists(n)
            spec = f"IVF{nlist},Flat" if concrete == "ivf" else f"IVF{nlist},PQ{pq_subquantizers(dimension)}x8"
            inner = faiss.index_factory(dimension, spec, faiss.METRIC_INNER_PRODUCT)
            if concrete == "ivfpq":  # polysemous codes are for Hamming filtering, which we do not use
                faiss.downcast_index(inner).do_polysemous_training = False
            inner.train(_training_sample(batches, n, max(64 * nlist, 256 * 64), seed))
            faiss.downcast_index(inner).nprobe = default_nprobe(nlist)
        vi = cls(inner if concrete in ("ivf", "ivfpq") else faiss.IndexIDMap2(inner), concrete)
        for ids, vecs in batches():
            vi.add(ids, vecs)
        return vi

    # --- properties ------------------------------------------------------------
    @property
    def dimension(self) -> int:
        return int(self.index.d)

    @property
    def ntotal(self) -> int:
        """Live vectors (tombstones excluded)."""
        return int(self.index.ntotal) - len(self.deleted)

    @property
    def inner(self) -> faiss.Index:
        if self.kind in ("ivf", "ivfpq"):
            return faiss.downcast_index(self.index)
        return faiss.downcast_index(self.index.index)

    @property
    def nlist(self) -> int | None:
        return int(self.inner.nlist) if self.kind in ("ivf", "ivfpq") else None

    def describe(self) -> str:
        if self.kind == "hnsw":
            return f"hnsw (M={HNSW_M}, {len(self.deleted)} tombstones)"
        if self.kind in ("ivf", "ivfpq"):
            return f"{self.kind} ({self.nlist} lists)"
        return "flat"

    # --- updates ---------------------------------------------------------------
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            self.index.add_with_ids(
                np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(ids, dtype=np.int64)
            )

    def remove(self, ids) -> int:
        ids = np.asarray(list(ids), dtype=np.int64)
        if not len(ids):
            return 0
        if self.kind == "hnsw":  # HNSW cannot remove: tombstone, skipped by every search
            before = len(self.deleted)
            self.deleted.update(int(i) for i in ids)
            return len(self.deleted) - before
        return int(self.index.remove_ids(faiss.IDSelectorBatch(ids)))

    def needs_compaction(self) -> bool:
        return len(self.deleted) > 0.25 * max(1, int(self.index.ntotal))

    # --- search ------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None,
               settings: SearchSettings | None = None):
        """Top ``k`` ``(scores, ids)`` per query; ``allowed`` restricts the search to those ids.

        Missing results have id -1.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if allowed is not None and self.deleted:
            allowed = np.setdiff1d(allowed, np.fromiter(self.deleted, dtype=np.int64))
        k = max(1, min(k, self.ntotal if allowed is None else len(allowed)))
        settings = settings or SearchSettings()
        selector = None
        if allowed is not None:
            selector = faiss.IDSelectorBatch(np.asarray(allowed, dtype=np.int64))
        elif self.deleted:
            selector = faiss.IDSelectorNot(faiss.IDSelectorBatch(np.fromiter(self.deleted, dtype=np.int64)))
        if self.kind == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=max(k, settings.ef_search or DEFAULT_EF_SEARCH))
        elif self.kind in ("ivf", "ivfpq"):
            params = faiss.SearchParametersIVF(nprobe=settings.nprobe or int(self.inner.nprobe))
        else:
            params = faiss.SearchParameters()
        if selector is not None:
            params.sel = selector
        scores, ids = self.index.search(queries, k, params=params)
        return scores, ids

    def ids(self) -> np.ndarray:
        """Every live id (for consistency checks)."""
        ids = self.all_ids()
        if self.deleted:
            ids = ids[~np.isin(ids, np.fromiter(self.deleted, dtype=np.int64))]
        return ids

    def all_ids(self) -> np.ndarray:
        """Every id in the file, tombstones included."""
        if self.kind in ("ivf", "ivfpq"):
            lists = self.inner.invlists
            parts = [faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
                     for i in range(lists.nlist) if lists.list_size(i)]
            return np.concatenate(parts).astype(np.int64) if parts else np.empty(0, dtype=np.int64)
        return faiss.vector_to_array(self.index.id_map).astype(np.int64)

    # --- files -------------------------------------------------------------
    def save(self, directory: Path, generation: int) -> Path:
        """Write ``vectors-<generation>.faiss`` atomically and return its path."""
        directory = Path(directory)
        final = directory / file_name(generation)
        tmp = directory / f".{final.name}.tmp-{os.getpid()}"
        try:
            try:
                faiss.write_index(self.index, str(tmp))
            except RuntimeError as exc:  # FAISS reports a full disk this way
                raise SemsearchError(f"cannot write {final}: {str(exc).strip().splitlines()[-1]}") from None
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(directory)
        return final

    @classmethod
    def load(cls, path: Path) -> "VectorIndex":
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise IndexCorruptError(
                f"{path}: the FAISS file is damaged ({str(exc).strip().splitlines()[-1]}); "
                "run `semsearch index repair` to rebuild it from the stored vectors"
            ) from exc
        if isinstance(index, (faiss.IndexIVFFlat, faiss.IndexIVFPQ)):
            return cls(index, "ivf" if isinstance(index, faiss.IndexIVFFlat) else "ivfpq")
        if not isinstance(index, faiss.IndexIDMap2):
            raise IndexCorruptError(f"{path}: not a semsearch FAISS file; run `semsearch index repair`")
        inner = faiss.downcast_index(index.index)
        return cls(index, "hnsw" if isinstance(inner, faiss.IndexHNSWFlat) else "flat")


def _training_sample(batches: Batches, n: int, size: int, seed: int) -> np.ndarray:
    """A uniform random sample of about ``size`` vectors, drawn while streaming."""
    rng = np.random.default_rng(seed)
    keep = min(1.0, size / max(n, 1))
    parts = [vecs[rng.random(len(vecs)) < keep] for _, vecs in batches()]
    return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)


def vector_files(directory: Path) -> dict[int, Path]:
    """``generation -> path`` of the FAISS files present in an index folder."""
    out = {}
    for entry in Path(directory).iterdir():
        m = FILE_PATTERN.match(entry.name)
        if m:
            out[int(m.group(1))] = entry
    return out


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
