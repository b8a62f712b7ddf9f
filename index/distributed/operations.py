"""Reading back, deleting by filter, backup and compaction over the shards of a sharded index.

``ShardedOperations`` is a base of ``shards.ShardedIndex``. ``get`` asks each id's own shard;
``documents`` merges the shards' id-ordered streams (each a read snapshot of its shard; there is
no snapshot across shards) into one id-ordered stream and pages it, in constant memory.
``backup`` copies each shard's committed generation (``index.storage.backup``) and the manifest;
``compact`` compacts shard by shard.
"""

from __future__ import annotations

import heapq
import itertools
import os
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from ..errors import SemsearchError
from ..model.text import normalize_text
from ..records import DeleteResult
from ..storage import backup as backups
from ..storage import folder
from ..storage.listing import StoredDocument, check_paging


class ShardedOperations:
    """Operations of ``ShardedIndex`` (uses its ``path``, ``manifest``, ``indexes`` and ``shard_for``)."""

    path: Path
    manifest: Any
    indexes: list

    def shard_for(self, doc_id: str):  # pragma: no cover - provided by ShardedIndex
        raise NotImplementedError

    def get(self, ids: Iterable[str], vectors: bool = False) -> list[StoredDocument]:
        """The stored documents among ``ids``, in the order asked, each read from its shard."""
        wanted = list(dict.fromkeys(normalize_text(str(i)) for i in ids))
        by_shard: dict[int, list[str]] = {}
        for doc_id in wanted:
            by_shard.setdefault(self.indexes.index(self.shard_for(doc_id)), []).append(doc_id)
        found = {d.id: d for n, part in by_shard.items() for d in self.indexes[n].get(part, vectors=vectors)}
        return [found[i] for i in wanted if i in found]

    def documents(self, where: Mapping[str, Any] | None = None, limit: int | None = None, offset: int = 0,
                  after: str | None = None, vectors: bool = False) -> Iterator[StoredDocument]:
        """Stored documents of every shard in id order, paged as ``Index.documents`` pages them."""
        check_paging(limit, offset, after)
        return self._merged(where, limit, offset, after, vectors)

    def _merged(self, where, limit, offset, after, vectors) -> Iterator[StoredDocument]:
        streams = [index.documents(where=where, after=after, vectors=vectors) for index in self.indexes]
        try:
            merged = heapq.merge(*streams, key=lambda d: d.id)
            yield from itertools.islice(merged, offset, None if limit is None else offset + limit)
        finally:
            for stream in streams:
                stream.close()

    def delete_where(self, where: Mapping[str, Any]) -> DeleteResult:
        """Delete the documents whose metadata matches ``where``, shard by shard."""
        deleted: list[str] = []
        for index in self.indexes:
            deleted += index.delete_where(where).deleted
        return DeleteResult(deleted=sorted(deleted), missing=[])

    def backup(self, destination: str | os.PathLike, force: bool = False) -> backups.BackupResult:
        """Each shard's committed generation and the manifest, copied into ``destination`` (made aside and
        renamed into place). Each shard is consistent; shards are copied one after another."""
        started = time.monotonic()
        destination = Path(destination)
        if destination.exists() and not force:
            raise SemsearchError(f"{destination} exists; pass --force to replace it")
        parts = []
        with folder.staging(destination, "creating") as staging:
            folder.make_marked(staging)
            for name, index in zip(self.manifest.shards, self.indexes):
                parts.append(index.backup(staging / name))
            self.manifest.save(staging)
            if destination.exists():
                folder.replace_index(staging, destination)
            else:
                os.rename(staging, destination)
                folder.unmark(destination)
        return backups.BackupResult(
            source=str(self.path), destination=str(destination), generation=max(p.generation for p in parts),
            documents=sum(p.documents for p in parts), files=[f for p in parts for f in p.files],
            bytes=sum(p.bytes for p in parts), seconds=time.monotonic() - started,
            vectors_copied=all(p.vectors_copied for p in parts))

    def compact(self, wait: bool | float = False) -> list:
        """Compact every shard (see ``Index.compact``); one result per shard."""
        return [index.compact(wait=wait) for index in self.indexes]
