"""The vector index registry: ``--index-type`` names to backend classes, and ``auto``.

Backends are registered by name in ``index.options.VECTOR_BACKENDS`` (one
line each) and live one per file in ``index/ann/``. This module turns a
name into its class, resolves ``auto`` and a type that cannot be trained yet,
and builds, creates and loads indexes of any registered type:

- ``auto``: following FAISS's guidelines, exact ``flat`` below 10,000 vectors,
  ``ivf`` below 2,000,000, ``ivfpq`` above.
- A type that needs training data (``min_training``) stays flat until the
  index holds enough vectors.
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path

import faiss

from .. import options
from ..errors import IndexCorruptError, SemsearchError
from .base import Batches, SearchSettings, StoredIds, VectorIndex
from .flat import FlatIndex

__all__ = ["Batches", "SearchSettings", "StoredIds", "VectorIndex", "backend", "build", "empty", "load",
           "resolve_type", "FLAT_BELOW", "IVFPQ_FROM"]

FLAT_BELOW = 10_000  # auto: exact search below this many vectors
IVFPQ_FROM = 2_000_000  # auto: compressed codes from this many


def backend(kind: str) -> type[VectorIndex]:
    """The class registered for a concrete index type."""
    try:
        module, _, name = options.VECTOR_BACKENDS[kind].partition(":")
    except KeyError:
        raise SemsearchError(f"unknown index type {kind!r}; choose one of {', '.join(options.INDEX_TYPES)}") from None
    return getattr(import_module(module), name)


def resolve_type(kind: str, n: int) -> str:
    """The concrete type for ``kind`` at ``n`` vectors (``auto`` by size; a type that needs
    more training data than there is stays flat)."""
    if kind != options.AUTO_INDEX_TYPE and kind not in options.VECTOR_BACKENDS:
        raise SemsearchError(f"unknown index type {kind!r}; choose one of {', '.join(options.INDEX_TYPES)}")
    if kind == options.AUTO_INDEX_TYPE:
        kind = "flat" if n < FLAT_BELOW else "ivf" if n < IVFPQ_FROM else "ivfpq"
    if n < backend(kind).min_training:
        return "flat"
    return kind


def build(kind: str, dimension: int, n: int, batches: Batches, seed: int = 0,
          workdir: Path | None = None) -> VectorIndex:
    """An index of type ``kind`` (resolved for ``n`` vectors) over everything ``batches()`` yields;
    ``workdir``: the index folder, where an on-disk type writes its data while building."""
    return backend(resolve_type(kind, n)).build(dimension, n, batches, seed, workdir=workdir)


def empty(dimension: int) -> VectorIndex:
    """An empty exact index (what a new index starts with)."""
    return FlatIndex.empty(dimension)


def load(path: Path) -> VectorIndex:
    """Read a FAISS file and wrap it in the backend it belongs to."""
    try:
        for kind in options.VECTOR_BACKENDS:
            opened = backend(kind).open_file(Path(path))
            if opened is not None:
                return opened
        index = faiss.read_index(str(path))
    except RuntimeError as exc:
        raise IndexCorruptError(
            f"{path}: the FAISS file is damaged ({str(exc).strip().splitlines()[-1]}); "
            "run `semsearch index repair` to rebuild it from the stored vectors"
        ) from exc
    for kind in options.VECTOR_BACKENDS:
        cls = backend(kind)
        if cls.owns(index):
            return cls(index)
    raise IndexCorruptError(f"{path}: not a semsearch FAISS file; run `semsearch index repair`")
