"""What an operator does to a running index besides adding and searching: read documents back,
delete by filter, back it up, give disk space back.

``Operations`` is a base of ``indexer.Index`` (kept here so that ``Index`` stays its public face
of composed pieces); it uses only the index's folder, store, generations and write sessions.
The work itself is in ``listing`` (reading back), ``backup`` and ``space``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ContextManager, Iterable, Iterator, Mapping

from ..records import DeleteResult
from . import backup as backups
from . import listing, space
from .listing import StoredDocument


class Operations:
    """Reading back, deleting by filter, backup and compaction for an index folder."""

    path: Path

    def session(self) -> ContextManager[Any]:  # pragma: no cover - provided by Index
        raise NotImplementedError

    def get(self, ids: Iterable[str], vectors: bool = False) -> list[StoredDocument]:
        """The stored documents among ``ids``, in the order asked; ids not stored are left out.
        ``vectors=True`` adds each document's passages with their stored vectors."""
        return listing.get(self.path, ids, vectors=vectors)

    def documents(self, where: Mapping[str, Any] | None = None, limit: int | None = None, offset: int = 0,
                  after: str | None = None, vectors: bool = False) -> Iterator[StoredDocument]:
        """Stored documents in id order, streamed from one read snapshot (constant memory without a
        filter): those whose metadata matches ``where`` (as a search's filter), skipping ``offset``
        or starting after the id ``after``, at most ``limit``."""
        return listing.documents(self.path, where=where, limit=limit, offset=offset, after=after, vectors=vectors)

    def delete_where(self, where: Mapping[str, Any]) -> DeleteResult:
        """Delete every document whose metadata matches ``where`` (listed and deleted under the
        write lock, so no writer changes the set in between)."""
        if not where:
            from ..errors import SemsearchError

            raise SemsearchError("deleting by filter needs at least one key=value")
        with self.session() as writer:
            ids = [d.id for d in listing.documents(self.path, where=where)]
            return writer.delete(ids)

    def backup(self, destination: str | os.PathLike, force: bool = False) -> "backups.BackupResult":
        """A consistent copy of one committed generation at ``destination`` (see ``backup``), taken
        while writers and readers go on."""
        return backups.backup(self.path, Path(destination), force=force)

    def compact(self, wait: bool | float = False) -> "space.CompactResult":
        """Give the disk space of deleted rows back: VACUUM the database under the write lock (readers
        go on reading their snapshot), write a fresh vector base, truncate the WAL."""
        return space.compact(self, wait=wait)
