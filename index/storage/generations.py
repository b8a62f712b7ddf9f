"""The generation protocol: the vector files that match SQLite's committed state.

Every write bumps ``generation`` in the same SQLite transaction as its rows,
and writes its vector file (atomically) *before* that transaction commits:
either a delta, ``vectors-<generation>.delta``, holding only what the write
changed (``deltas``), or a whole new base, ``vectors-<generation>.faiss``,
whose generation SQLite then records as ``vectors_base`` in the same
transaction. The committed state is the base plus the deltas of every
generation after it. So a committed generation always has its files, and a
file of a generation that never committed is never loaded (its name says
so). Files that are missing, damaged or disagree with the stored passage ids
are never served: the vectors are rebuilt from the ones SQLite stores.

A write costs what it changes: a base is rewritten only when the deltas
since it outgrow it (``VectorIndex.delta_ratio``), when a write replaces the
whole index (rebuild, reindex), or when the index type is due to switch or
retrain. Indexes from before deltas (no ``vectors_base``) have a base for
their current generation.

``Generations`` is handed the store and the index folder and keeps one loaded
vector index in step with the committed generation, for readers and writers.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from ..ann import registry
from ..ann.base import DATA_SUFFIX
from ..ann.registry import StoredIds, VectorIndex
from ..errors import SemsearchError
from .deltas import MAX_DELTAS, Delta, delta_files, delta_name, load_delta
from .folder import numbered_entries
from .seals import SETTING as SEALS, recorded, sealed, verify
from .store import MetadataStore
from .whitened import faiss_vectors, index_dimension

FILE_PATTERN = re.compile(r"^vectors-(\d+)\.faiss$")
DATA_PATTERN = re.compile(r"^vectors-(\d+)" + re.escape(DATA_SUFFIX) + "$")  # an ivf-disk base's lists
TEMPORARY_GLOB = ".vectors-*.tmp-*"
BASE_COUNT = "vectors_base_count"  # the live vectors a base held when written (deletes shrink it)


def file_name(generation: int) -> str:
    return f"vectors-{generation}.faiss"


def data_name(generation: int) -> str:
    return f"vectors-{generation}{DATA_SUFFIX}"


def vector_files(folder: Path) -> dict[int, Path]:
    """``generation -> path`` of the FAISS files present in an index folder."""
    return numbered_entries(folder, FILE_PATTERN)


def data_files(folder: Path) -> dict[int, Path]:
    """``generation -> path`` of the on-disk lists of ``ivf-disk`` bases present in an index folder."""
    return numbered_entries(folder, DATA_PATTERN)


def base_bytes(folder: Path, base: int) -> int | None:
    """The size of a base on disk (its FAISS file and any data file of it); None when it is missing."""
    header = Path(folder) / file_name(base)
    if not header.is_file():
        return None
    data = Path(folder) / data_name(base)
    return header.stat().st_size + (data.stat().st_size if data.is_file() else 0)


def remove_temporary_files(folder: Path) -> list[str]:
    """Remove what a killed writer left half-written; only the lock holder may call this."""
    removed = []
    for leftover in Path(folder).glob(TEMPORARY_GLOB):
        leftover.unlink(missing_ok=True)
        removed.append(leftover.name)
    return removed


def read_vectors(folder: Path, base: int, generation: int, seals: dict | None = None) -> VectorIndex:
    """The base file of ``base`` with the deltas up to ``generation`` applied (SemsearchError or
    FileNotFoundError when one is damaged, missing, or does not match its recorded seal, ``seals``)."""
    verify(Path(folder) / file_name(base), seals)
    vectors = registry.load(Path(folder) / file_name(base))  # an ivf-disk base maps its data file, not read yet
    verify(Path(folder) / data_name(base), seals)
    for g in range(base + 1, generation + 1):
        verify(Path(folder) / delta_name(g), seals)
        delta = load_delta(Path(folder) / delta_name(g), vectors.dimension)
        vectors.remove(delta["removed"])
        vectors.add(delta["ids"], delta["vectors"])
    return vectors


def chain_names(base: int, generation: int) -> list[str]:
    """The files of a committed state: its base, then its deltas in order."""
    return [file_name(base)] + [delta_name(g) for g in range(base + 1, generation + 1)]


def base_generation(info: dict, generation: int) -> int:
    """The generation of the base file under ``generation`` (before deltas: the generation itself)."""
    return int(info.get("vectors_base", generation))


@dataclass
class Commit:
    """One write in progress: the generation it will commit and the vectors it changes. ``add`` and
    ``remove`` change them and note it for the delta file; ``replace`` puts a whole new index."""

    generation: int
    vectors: VectorIndex
    delta: Delta = field(default_factory=Delta)
    replaced: bool = False

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.vectors.add(ids, vectors)
        self.delta.add(ids, vectors)

    def remove(self, ids) -> int:
        ids = np.asarray(list(ids), dtype=np.int64)
        self.delta.remove(ids)
        return self.vectors.remove(ids)

    def replace(self, vectors: VectorIndex) -> None:
        self.vectors, self.replaced = vectors, True


class Generations:
    """The vector index of the committed generation of one store and folder."""

    def __init__(self, store: MetadataStore, folder: Path):
        self.store = store
        self.folder = Path(folder)
        self.vectors: VectorIndex | None = None
        self.generation = -1
        self.base = -1  # the generation of the base file under the loaded vectors

    def current(self) -> VectorIndex:
        """The vectors of the committed generation, reloaded when another write committed.

        Call it inside a read transaction to pair them with rows of the same state.
        """
        if self.vectors is None or self.store.generation() != self.generation:
            self.load()
        return self.vectors

    def load(self, rebuild_kind: str = "flat") -> bool:
        """Load the base file and the deltas of the committed generation; returns False when the
        vectors had to be rebuilt from the stored ones (readers build an exact flat index;
        writers the configured type)."""
        store = self.store
        with store.transaction(immediate=False):  # one read snapshot: generation, counts, vectors
            generation = store.generation()
            info = store.get_info()
            dimension = index_dimension(info)  # the whitened dimension when the index is whitened
            base = base_generation(info, generation)
            vectors = self._read(base, generation, dimension, recorded(info))
            if vectors is not None:
                vectors = self._matching(vectors, dimension)
            from_file = vectors is not None
            if vectors is None:
                n = store.counts()[1]
                vectors = registry.build(rebuild_kind, dimension, n, faiss_vectors(store, info),
                                         workdir=self.folder)
        self.vectors, self.generation, self.base = vectors, generation, base
        return from_file

    def _read(self, base: int, generation: int, dimension: int, seals: dict) -> VectorIndex | None:
        """``read_vectors``, or None when a file is missing or damaged or of another dimension."""
        try:
            vectors = read_vectors(self.folder, base, generation, seals)
        except (SemsearchError, FileNotFoundError):
            return None
        return vectors if vectors.dimension == dimension else None

    def stored_ids(self) -> StoredIds:
        count, total = self.store.passage_id_summary()
        return StoredIds(count, total, self.store.passage_ids)

    def _matching(self, vectors: VectorIndex, dimension: int) -> VectorIndex | None:
        if vectors.dimension != dimension or not vectors.agrees_with(self.stored_ids()):
            return None
        return vectors

    def chain(self) -> set[str]:
        """The names of the files the committed state is made of: its base (with its data file, if
        it has one) and its deltas."""
        return {*chain_names(self.base, self.generation), data_name(self.base)}

    # --- for the writer, who holds the lock -------------------------------------------------
    def prepare_for_writing(self) -> list[str]:
        """Clear a killed writer's leftovers (returns their names) and make sure the files match the store."""
        removed = remove_temporary_files(self.folder)
        from_file = self.load(rebuild_kind=self.store.get_info().get("index_type", "flat"))
        if not from_file:
            self.save()
        else:
            self.remove_other_files()
        return removed

    def save(self) -> Path:
        """(Re)write the loaded vectors as the base of their generation, record it, and remove every
        other vector file."""
        path = self.vectors.save(self.folder / file_name(self.generation))
        with self.store.transaction():
            self.store.set_info({"vectors_base": self.generation, BASE_COUNT: self.vectors.ntotal,
                                 SEALS: self._base_seals(self.generation)})
        self.base = self.generation
        self.remove_other_files()
        return path

    @contextmanager
    def commit(self) -> Iterator[Commit]:
        """One write, all or nothing.

        The body changes rows, and the vectors through ``commit``, inside a
        SQLite transaction; the vector file of the new generation (a delta or
        a new base) is written before COMMIT. Any failure (a full disk
        included) rolls back, so the index stays exactly as it was; a file
        written for a generation that never committed is never loaded and is
        removed by the next writer.
        """
        try:
            with self.store.transaction():
                commit = Commit(self.store.bump_generation(), self.vectors)
                yield commit
                self.vectors = commit.vectors
                self._write(commit)
        except BaseException:
            self.vectors, self.generation, self.base = None, -1, -1  # may be ahead of the store: reload
            raise
        self.remove_other_files()

    def _write(self, commit: Commit) -> None:
        """Write the delta of ``commit``, or a new base when one is due (switching type or
        rebuilding first when due)."""
        generation = commit.generation
        info = self.store.get_info()
        kind = info.get("index_type", "flat")
        n = self.store.counts()[1]
        current = self.vectors
        rebuilt = registry.resolve_type(kind, n) != current.kind or current.needs_rebuild(n)
        if rebuilt:
            self.vectors = registry.build(kind, current.dimension, n, faiss_vectors(self.store, info),
                                          workdir=self.folder)
        base = base_generation(info, generation - 1)
        data = None if rebuilt or commit.replaced else commit.delta.encode(self.vectors.dimension)
        if data is None or self._compaction_due(base, generation, len(data)):
            self.vectors.save(self.folder / file_name(generation))
            self.store.set_info({"vectors_base": generation, BASE_COUNT: self.vectors.ntotal,
                                 SEALS: self._base_seals(generation)})
            base = generation
        else:
            commit.delta.save(self.folder / delta_name(generation), self.vectors.dimension, data)
            kept = {k: v for k, v in recorded(info).items() if k in {*chain_names(base, generation), data_name(base)}}
            self.store.set_info({SEALS: sealed(self.folder, [delta_name(generation)], kept)})
            if "vectors_base" not in info:
                self.store.set_info({"vectors_base": base})
        self.generation, self.base = generation, base

    def _base_seals(self, generation: int) -> dict[str, list]:
        return sealed(self.folder, [file_name(generation), data_name(generation)])

    def _compaction_due(self, base: int, generation: int, pending: int) -> bool:
        """True when the deltas since ``base`` (with this one, of ``pending`` bytes) would outgrow
        ``delta_ratio`` times the base file, or number more than ``MAX_DELTAS``, or when fewer than
        half the vectors the base held are still live."""
        if generation - base > MAX_DELTAS:
            return True
        held = self.store.get_info().get(BASE_COUNT)
        if held is not None and self.vectors.ntotal * 2 < int(held):  # mostly deleted vectors: give space back
            return True
        size = base_bytes(self.folder, base)
        if size is None:
            return True
        existing = sum(p.stat().st_size for g, p in delta_files(self.folder).items() if base < g < generation)
        return self.vectors.compaction_due(existing + pending, size)

    def remove_other_files(self) -> None:
        """Remove every vector file that is not part of the loaded (committed) state."""
        keep = self.chain()
        for file in [*vector_files(self.folder).values(), *data_files(self.folder).values(),
                     *delta_files(self.folder).values()]:
            if file.name not in keep:
                file.unlink(missing_ok=True)
