"""The vector index: a FAISS inner-product index whose ids are passage row ids.

Files are written atomically (temporary file, fsync, rename, fsync of the
folder) and named after the store generation they match
(``vectors-<generation>.faiss``), so a reader never loads a half-written file
and a file that lags the database is recognised by its name.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import faiss
import numpy as np

from .errors import IndexCorruptError

FILE_PATTERN = re.compile(r"^vectors-(\d+)\.faiss$")


def file_name(generation: int) -> str:
    return f"vectors-{generation}.faiss"


class VectorIndex:
    """``IndexIDMap2`` over ``IndexFlatIP``: exact inner product on unit vectors (cosine)."""

    def __init__(self, index: faiss.Index):
        self.index = index

    @classmethod
    def empty(cls, dimension: int) -> "VectorIndex":
        return cls(faiss.IndexIDMap2(faiss.IndexFlatIP(dimension)))

    @classmethod
    def from_batches(cls, dimension: int, batches) -> "VectorIndex":
        """Build from ``(ids, vectors)`` batches (as the store streams them)."""
        vi = cls.empty(dimension)
        for ids, vecs in batches:
            vi.add(ids, vecs)
        return vi

    @property
    def dimension(self) -> int:
        return int(self.index.d)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            self.index.add_with_ids(
                np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(ids, dtype=np.int64)
            )

    def remove(self, ids) -> int:
        ids = np.asarray(list(ids), dtype=np.int64)
        if not len(ids):
            return 0
        return int(self.index.remove_ids(faiss.IDSelectorBatch(ids)))

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None):
        """Top ``k`` ``(scores, ids)`` per query; ``allowed`` restricts the search to those ids.

        Missing results have id -1.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = max(1, min(k, self.ntotal if allowed is None else len(allowed)))
        params = None
        if allowed is not None:
            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(np.asarray(allowed, dtype=np.int64)))
        return self.index.search(queries, k, params=params)

    def ids(self) -> np.ndarray:
        """Every stored id (for consistency checks)."""
        return faiss.vector_to_array(self.index.id_map).astype(np.int64)

    # --- files -------------------------------------------------------------
    def save(self, directory: Path, generation: int) -> Path:
        """Write ``vectors-<generation>.faiss`` atomically and return its path."""
        directory = Path(directory)
        final = directory / file_name(generation)
        tmp = directory / f".{final.name}.tmp-{os.getpid()}"
        try:
            faiss.write_index(self.index, str(tmp))
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
        return cls(index)


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
