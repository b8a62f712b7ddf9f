"""Delta files: the vectors one committed write changed, so a commit writes what it changes.

A write that only adds and removes vectors does not rewrite the whole FAISS
file: it writes ``vectors-<generation>.delta`` (the passage ids removed, and
the ids and vectors added; numpy arrays in one file, written to a temporary
name, fsynced and renamed) before its SQLite COMMIT. Readers load the base
FAISS file (``vectors-<base>.faiss``, the generation SQLite records as
``vectors_base``) and apply the deltas of the generations after it in order.
When the deltas grow past ``ratio`` times the base (by bytes), or past
``MAX_DELTAS`` files, the next commit writes a new base instead (compaction,
as Lucene merges segments), so the bytes written by a build stay a small
multiple of the final index and a reader never applies much.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import SemsearchError
from .folder import numbered_entries

DELTA_PATTERN = re.compile(r"^vectors-(\d+)\.delta$")
MAX_DELTAS = 1000  # a reader applies at most this many files (a million passages in commits of 1,000)


def delta_name(generation: int) -> str:
    return f"vectors-{generation}.delta"


def delta_files(folder: Path) -> dict[int, Path]:
    """``generation -> path`` of the delta files present in an index folder."""
    return numbered_entries(folder, DELTA_PATTERN)


@dataclass
class Delta:
    """What one write changed: ids removed, then ids and vectors added (never the same ids)."""

    removed: list[np.ndarray] = field(default_factory=list)
    added_ids: list[np.ndarray] = field(default_factory=list)
    added: list[np.ndarray] = field(default_factory=list)

    def remove(self, ids) -> None:
        ids = np.asarray(list(ids), dtype=np.int64)
        if len(ids):
            self.removed.append(ids)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            self.added_ids.append(np.asarray(ids, dtype=np.int64))
            self.added.append(np.ascontiguousarray(vectors, dtype=np.float32))

    def arrays(self, dimension: int) -> dict[str, np.ndarray]:
        return {
            "removed": np.concatenate(self.removed) if self.removed else np.empty(0, np.int64),
            "ids": np.concatenate(self.added_ids) if self.added_ids else np.empty(0, np.int64),
            "vectors": np.concatenate(self.added) if self.added else np.empty((0, dimension), np.float32),
        }

    def encode(self, dimension: int) -> bytes:
        """The file's bytes (an uncompressed numpy ``.npz``)."""
        buffer = io.BytesIO()
        np.savez(buffer, **self.arrays(dimension))
        return buffer.getvalue()

    def save(self, path: Path, dimension: int, data: bytes | None = None) -> Path:
        """Write ``data`` (default: ``encode``) atomically (temporary file, fsync, rename); a full
        disk is one clear error."""
        from ..files import write_atomically

        data = self.encode(dimension) if data is None else data

        def write(tmp: Path) -> None:
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as exc:
                raise SemsearchError(f"cannot write {path}: {exc.strerror or exc}") from None

        return write_atomically(Path(path), write)


def load_delta(path: Path, dimension: int) -> dict[str, np.ndarray]:
    """The arrays of a delta file; SemsearchError when it is damaged or of another dimension."""
    try:
        with np.load(path, allow_pickle=False) as data:
            out = {k: data[k] for k in ("removed", "ids", "vectors")}
    except (OSError, ValueError, KeyError) as exc:
        raise SemsearchError(f"damaged delta file {path}: {exc}") from None
    if out["vectors"].ndim != 2 or out["vectors"].shape[1:] != (dimension,) or len(out["ids"]) != len(out["vectors"]):
        raise SemsearchError(f"damaged delta file {path}: shapes do not match")
    return out
