"""Sharded indexes: N ordinary indexes in one folder, each document in the shard its id hashes to.

A sharded index is a folder holding ``semsearch-shards.json`` (the manifest:
its format, the hash, the shard folders) and ``shard-0`` … ``shard-<N-1>``,
each an ordinary semsearch index with the same encoder configuration (checked
on open). A document lives in shard :func:`shard_of` of its id: the first 8
bytes of the SHA-1 of the id (Unicode NFC, UTF-8) as a big-endian number,
modulo N, the same on every machine and in every process (Python's ``hash()``
is salted per process, so it is never used).

:class:`ShardedIndex` owns creating, building (resumably: an interrupted build
resumes shard by shard), opening, adding, deleting and describing one. Every
write goes through each shard's own writer, so each shard keeps the single
index's guarantees; a write that touches several shards commits shard by
shard (there is no transaction across shards). Searching is
``search.sharded``; splitting an existing index is ``index.distributed.split``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .. import options
from ..errors import ConfigMismatchError, IndexExistsError, IndexNotFoundError, SemsearchError
from ..files import write_atomically
from ..indexer import Index
from ..ingest.engines import Engine
from ..model.config import EncoderConfig
from ..model.text import normalize_text
from ..records import AddResult, DeleteResult, IndexInfo
from ..storage import folder
from ..storage.writer import OnCommit, Progress, Writer, as_document
from .operations import ShardedOperations
from .shared_whitening import refit_shared

MANIFEST = options.SHARD_MANIFEST
SHARD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # a child folder: no separator, no '..'
HASH = "sha1-mod"  # the first 8 bytes of SHA-1 of the NFC id, big-endian, modulo the shard count
SAME_IN_EVERY_SHARD = ("dimension", "passage_tokens", "passage_overlap")


def shard_of(doc_id: str, count: int) -> int:
    """The shard of a document id: stable across machines, processes and Python versions."""
    digest = hashlib.sha1(normalize_text(str(doc_id)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count


def shard_name(n: int) -> str:
    return f"shard-{n}"


def is_sharded(path: str | os.PathLike) -> bool:
    return (Path(path) / MANIFEST).is_file()


@dataclass(frozen=True)
class ShardManifest:
    """What ``semsearch-shards.json`` records."""

    shards: tuple[str, ...]  # shard folders, relative to the sharded index's folder, in shard order
    hash: str = HASH
    format: int = 1

    @property
    def count(self) -> int:
        return len(self.shards)

    def save(self, where: Path) -> None:
        """Written to a temporary file, fsynced and renamed: never half there."""
        def write(tmp: Path) -> None:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump({"format": self.format, "hash": self.hash, "shards": list(self.shards)}, f, indent=1)
                f.flush()
                os.fsync(f.fileno())

        write_atomically(Path(where) / MANIFEST, write)

    @classmethod
    def load(cls, where: Path) -> "ShardManifest":
        try:
            data = json.loads((where / MANIFEST).read_text(encoding="utf-8"))
            manifest = cls(shards=tuple(str(s) for s in data["shards"]), hash=str(data["hash"]),
                           format=int(data["format"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SemsearchError(f"{where / MANIFEST} is not a readable shard manifest ({exc})") from None
        if manifest.format != 1 or manifest.hash != HASH or not manifest.shards:
            raise SemsearchError(f"{where / MANIFEST}: unsupported shard manifest "
                                 f"(format {manifest.format}, hash {manifest.hash!r}); upgrade semsearch")
        bad = [name for name in manifest.shards if not SHARD_NAME.fullmatch(name) or name in (".", "..")]
        if bad or len(set(manifest.shards)) != len(manifest.shards):
            shown = repr(bad[0]) if bad else "a repeated name"
            raise SemsearchError(f"{where / MANIFEST}: shard {shown} is not a plain folder name inside the "
                                 "sharded index; refusing to act on folders outside it")
        return manifest


@dataclass
class ShardedInfo:
    """What ``semsearch index info`` shows of a sharded index."""

    path: str
    shard_count: int
    hash: str
    documents: int
    passages: int
    vectors: int
    complete: bool
    shards: list[IndexInfo] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def merge_add(total: AddResult, part: AddResult) -> None:
    """Add one shard's ``AddResult`` into ``total``."""
    total.added += part.added
    total.updated += part.updated
    total.unchanged += part.unchanged
    total.metadata_updated += part.metadata_updated
    total.skipped_empty += part.skipped_empty
    total.duplicates += part.duplicates
    total.passages += part.passages


class ShardedIndex(ShardedOperations):
    """A sharded index folder. Use :meth:`create`, :meth:`open` or :meth:`build`; reading back, backup
    and compaction come from ``ShardedOperations``."""

    def __init__(self, path: Path, manifest: ShardManifest, indexes: list[Index]):
        self.path = Path(path)
        self.manifest = manifest
        self.indexes = indexes

    # --- opening and creating ------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike, model: str | os.PathLike | None = None, *,
             batch_size: int = options.DEFAULT_BATCH_SIZE, device: str | None = None,
             wait: bool | float = False) -> "ShardedIndex":
        """Open every shard; refuses shards whose encoder configurations differ."""
        path = Path(path)
        if not is_sharded(path):
            raise IndexNotFoundError(f"no sharded semsearch index at {path} (no {MANIFEST})")
        manifest = ShardManifest.load(path)
        indexes = [Index.open(path / name, model=model, batch_size=batch_size, device=device, wait=wait)
                   for name in manifest.shards]
        first = indexes[0].config
        for name, index in zip(manifest.shards[1:], indexes[1:]):
            cfg = index.config
            if EncoderConfig.from_info(cfg) != EncoderConfig.from_info(first) or any(
                    cfg.get(k) != first.get(k) for k in SAME_IN_EVERY_SHARD):
                raise ConfigMismatchError(f"{path / name} was not built like {path / manifest.shards[0]} "
                                          "(model, layer, pooling or passages differ); rebuild it the same way")
        return cls(path, manifest, indexes)

    @classmethod
    def create(cls, path: str | os.PathLike, shards: int, **config: Any) -> "ShardedIndex":
        """A new sharded index of ``shards`` empty shards (``config``: as for ``Index.create``, whose
        ``complete=False`` marks a build under way). Made aside and renamed into place."""
        path = Path(path)
        if not isinstance(shards, int) or shards < 1:
            raise SemsearchError(f"the number of shards must be at least 1 (got {shards!r})")
        if is_sharded(path):
            raise IndexExistsError(f"a sharded index already exists at {path}; pass --force to replace it")
        folder.check_destination(path, force=False)
        with folder.staging(path, "creating") as staging:
            folder.make_marked(staging)
            names = tuple(shard_name(n) for n in range(shards))
            for name in names:
                Index.create(staging / name, **config).close()
            ShardManifest(shards=names).save(staging)
            folder.put_in_place(staging, path)
        return cls.open(path, batch_size=config.get("batch_size", options.DEFAULT_BATCH_SIZE),
                        device=config.get("device"))

    @classmethod
    def build(cls, path: str | os.PathLike, documents: Iterable[Any], *, shards: int, force: bool = False,
              progress: Progress | None = None, on_commit: OnCommit | None = None,
              engine: Engine | None = None, **config: Any) -> tuple["ShardedIndex", AddResult]:
        """Create a sharded index at ``path`` and add ``documents``, as ``Index.build`` does for one:
        an interrupted build is resumed, and ``force`` builds the new one aside and swaps it in."""
        path = Path(path)
        batch = {"batch_size": config.get("batch_size", options.DEFAULT_BATCH_SIZE), "device": config.get("device")}
        if is_sharded(path) and not force:
            existing = cls.open(path, **batch)
            if all(ix.config.get("complete", True) for ix in existing.indexes):
                raise IndexExistsError(f"a sharded index already exists at {path}; pass --force to replace it")
            if existing.manifest.count != shards:
                raise SemsearchError(f"{path} holds an interrupted build of {existing.manifest.count} shards, "
                                     f"not {shards}; resume it with --shards {existing.manifest.count} or pass --force")
            return existing, existing.route(documents, progress, on_commit, engine, complete=True)
        if force and (is_sharded(path) or folder.is_index(path)):
            with folder.staging(path, "building") as staging:
                new = cls.create(staging, shards, complete=False, **config)
                folder.mark(staging)
                result = new.route(documents, progress, on_commit, engine, complete=True)
                new.close()
                folder.replace_index(staging, path)
            return cls.open(path, **batch), result
        if folder.is_index(path):
            raise IndexExistsError(f"an index already exists at {path}; pass --force to replace it")
        new = cls.create(path, shards, complete=False, **config)
        return new, new.route(documents, progress, on_commit, engine, complete=True)

    def close(self) -> None:
        for index in self.indexes:
            index.close()

    def __enter__(self) -> "ShardedIndex":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- reading -------------------------------------------------------------------------
    @property
    def config(self) -> dict[str, Any]:
        """The first shard's recorded configuration (every shard's encoder configuration is the same)."""
        return self.indexes[0].config

    @property
    def encoder(self):
        """The shards' encoder (the first shard's; every shard records the same configuration)."""
        return self.indexes[0].encoder

    def shard_for(self, doc_id: str) -> Index:
        return self.indexes[shard_of(doc_id, self.manifest.count)]

    def info(self) -> ShardedInfo:
        infos = [index.info() for index in self.indexes]
        return ShardedInfo(
            path=str(self.path), shard_count=self.manifest.count, hash=self.manifest.hash,
            documents=sum(i.documents for i in infos), passages=sum(i.passages for i in infos),
            vectors=sum(i.vectors for i in infos), complete=all(i.complete for i in infos), shards=infos)

    # --- writing -------------------------------------------------------------------------
    def add(self, documents: Iterable[Any], progress: Progress | None = None,
            on_commit: OnCommit | None = None, engine: Engine | None = None) -> AddResult:
        """Upsert documents, each into its shard (see ``Index.add``); holds every shard's lock."""
        return self.route(documents, progress, on_commit, engine)

    def route(self, documents: Iterable[Any], progress: Progress | None, on_commit: OnCommit | None,
              engine: Engine | None, complete: bool = False) -> AddResult:
        """Send each document to its shard's writer, gathered into one add per shard of up to the
        engine's ``documents_per_call`` (a commit's worth by default); ``complete`` marks each shard
        complete at the end (a build)."""
        per_call = int(getattr(engine, "documents_per_call", options.COMMIT_EVERY))
        total = AddResult()
        seen: set[str] = set()
        with ExitStack() as stack:
            writers: list[Writer] = [stack.enter_context(index.session(engine)) for index in self.indexes]
            for writer in writers:
                writer.refit_shared = True  # one whitening for all shards, fitted below (shared_whitening)
            buffers: list[dict[str, dict]] = [{} for _ in writers]

            def flush(n: int) -> None:
                if buffers[n]:
                    merge_add(total, writers[n].add(list(buffers[n].values()), progress, on_commit))
                    buffers[n] = {}

            for doc in documents:
                doc_id, text, meta = as_document(doc)
                if doc_id in seen:
                    total.duplicates.append(doc_id)
                seen.add(doc_id)
                n = shard_of(doc_id, len(writers))
                buffers[n].pop(doc_id, None)  # the last occurrence wins, in input order
                buffers[n][doc_id] = {"id": doc_id, "text": text, "metadata": meta}
                if len(buffers[n]) >= per_call:
                    flush(n)
            for n in range(len(writers)):
                flush(n)
            refit_shared(writers)
            if complete:
                for writer in writers:
                    writer.finish_build()
        return total

    def delete(self, ids: Iterable[str]) -> DeleteResult:
        """Delete documents by id from their shards; ids that are not stored are reported as missing."""
        wanted = list(dict.fromkeys(normalize_text(str(i)) for i in ids))
        by_shard: dict[int, list[str]] = {}
        for doc_id in wanted:
            by_shard.setdefault(shard_of(doc_id, self.manifest.count), []).append(doc_id)
        deleted: set[str] = set()
        for n, shard_ids in sorted(by_shard.items()):
            deleted.update(self.indexes[n].delete(shard_ids).deleted)
        return DeleteResult(deleted=[i for i in wanted if i in deleted],
                            missing=[i for i in wanted if i not in deleted])
