"""The generation protocol: the FAISS file that matches SQLite's committed state.

Every write bumps ``generation`` in the same SQLite transaction as its rows,
and writes ``vectors-<generation>.faiss`` (atomically) *before* that
transaction commits. So a committed generation always has its file, and a file
for a generation that never committed is never loaded (its name says so). A
file that is missing, damaged or disagrees with the stored passage ids is
never served: the vectors are rebuilt from the ones SQLite stores.

``Generations`` is handed the store and the index folder and keeps one loaded
vector index in step with the committed generation, for readers and writers.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from . import vectors as registry
from .errors import SemsearchError
from .store import MetadataStore
from .vectors import StoredIds, VectorIndex

FILE_PATTERN = re.compile(r"^vectors-(\d+)\.faiss$")
TEMPORARY_GLOB = ".vectors-*.tmp-*"


def file_name(generation: int) -> str:
    return f"vectors-{generation}.faiss"


def vector_files(folder: Path) -> dict[int, Path]:
    """``generation -> path`` of the FAISS files present in an index folder."""
    out = {}
    for entry in Path(folder).iterdir():
        m = FILE_PATTERN.match(entry.name)
        if m:
            out[int(m.group(1))] = entry
    return out


def remove_temporary_files(folder: Path) -> list[str]:
    """Remove what a killed writer left half-written; only the lock holder may call this."""
    removed = []
    for leftover in Path(folder).glob(TEMPORARY_GLOB):
        leftover.unlink(missing_ok=True)
        removed.append(leftover.name)
    return removed


@dataclass
class Commit:
    """One write in progress: the generation it will commit and the vectors it changes
    (a write may also put a whole new index in ``vectors``)."""

    generation: int
    vectors: VectorIndex


class Generations:
    """The vector index of the committed generation of one store and folder."""

    def __init__(self, store: MetadataStore, folder: Path):
        self.store = store
        self.folder = Path(folder)
        self.vectors: VectorIndex | None = None
        self.generation = -1

    def current(self) -> VectorIndex:
        """The vectors of the committed generation, reloaded when another write committed.

        Call it inside a read transaction to pair them with rows of the same state.
        """
        if self.vectors is None or self.store.generation() != self.generation:
            self.load()
        return self.vectors

    def load(self, rebuild_kind: str = "flat") -> bool:
        """Load the FAISS file of the committed generation; returns False when it had to be rebuilt
        from the stored vectors (readers build an exact flat index; writers the configured type)."""
        store = self.store
        with store.transaction(immediate=False):  # one read snapshot: generation, counts, vectors
            generation = store.generation()
            dimension = int(store.get_info()["dimension"])
            vectors = None
            path = self.folder / file_name(generation)
            if path.is_file():
                try:
                    vectors = self._matching(registry.load(path), dimension)
                except (SemsearchError, FileNotFoundError):
                    vectors = None
            from_file = vectors is not None
            if vectors is None:
                n = store.counts()[1]
                vectors = registry.build(rebuild_kind, dimension, n, lambda: store.iter_vectors(dimension))
        self.vectors, self.generation = vectors, generation
        return from_file

    def stored_ids(self) -> StoredIds:
        count, total = self.store.passage_id_summary()
        return StoredIds(count, total, self.store.passage_ids)

    def _matching(self, vectors: VectorIndex, dimension: int) -> VectorIndex | None:
        if vectors.dimension != dimension or not vectors.agrees_with(self.stored_ids()):
            return None
        return vectors

    # --- for the writer, who holds the lock -------------------------------------------------
    def prepare_for_writing(self) -> list[str]:
        """Clear a killed writer's leftovers (returns their names) and make sure the file matches the store."""
        removed = remove_temporary_files(self.folder)
        from_file = self.load(rebuild_kind=self.store.get_info().get("index_type", "flat"))
        if not from_file or len(vector_files(self.folder)) > 1:
            self.save()
        return removed

    def save(self) -> Path:
        """(Re)write the file of the loaded generation and remove the files of other generations."""
        path = self.vectors.save(self.folder / file_name(self.generation))
        self.remove_other_files(self.generation)
        return path

    @contextmanager
    def commit(self) -> Iterator[Commit]:
        """One write, all or nothing.

        The body changes rows, and ``commit.vectors``, inside a SQLite
        transaction; the FAISS file of the new generation is written before
        COMMIT. Any failure (a full disk included) rolls back, so the index
        stays exactly as it was; a file written for a generation that never
        committed is never loaded and is removed by the next writer.
        """
        try:
            with self.store.transaction():
                commit = Commit(self.store.bump_generation(), self.vectors)
                yield commit
                self.vectors = commit.vectors
                self._write(commit.generation)
        except BaseException:
            self.vectors, self.generation = None, -1  # may be ahead of the store: reload
            raise
        self.remove_other_files(commit.generation)

    def _write(self, generation: int) -> None:
        """Write the file for ``generation``, first switching type or rebuilding when due."""
        kind = self.store.get_info().get("index_type", "flat")
        n = self.store.counts()[1]
        current = self.vectors
        if registry.resolve_type(kind, n) != current.kind or current.needs_rebuild(n):
            dimension = current.dimension
            self.vectors = registry.build(kind, dimension, n, lambda: self.store.iter_vectors(dimension))
        self.vectors.save(self.folder / file_name(generation))
        self.generation = generation

    def remove_other_files(self, generation: int) -> None:
        for gen, file in vector_files(self.folder).items():
            if gen != generation:
                file.unlink(missing_ok=True)
