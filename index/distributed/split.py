"""Splitting an index into shards (``semsearch index split``) without encoding anything again.

``split_index`` builds a sharded index (``index.distributed.shards``) with the source's
recorded configuration and feeds it the source's documents, read from one
SQLite snapshot. The engine that would encode them is :class:`StoredPassages`:
it hands the writer each document's stored passages and float32 vectors as
they are, so the shards hold exactly the source's vectors, while the writing
is the ordinary writer's (per-shard transactions, crash-safe; rerunning an
interrupted split resumes it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from ..errors import SemsearchError
from ..indexer import Index
from ..ingest.engines import Chunk, EncodeSettings, Progress
from ..ingest.passages import EncodedDocument
from ..records import AddResult
from ..storage import whitened
from .shards import ShardedIndex

CONFIG_KEYS = ("layer", "pooling", "max_length", "precision", "backend", "keep_hangul", "passage_overlap",
               "index_type")


class StoredPassages:
    """An engine that 'encodes' a document by reading its passages and vectors from another index."""

    def __init__(self, source: Index):
        self.source = source
        self.dimension = int(source.config["dimension"])

    def encode_chunks(self, chunks: Iterable[Chunk], settings: EncodeSettings,
                      progress: Progress | None = None) -> Iterator[tuple[Chunk, dict[str, EncodedDocument]]]:
        for chunk in chunks:
            yield chunk, self.lookup(chunk.texts)
            if progress and chunk.to_encode:
                progress(len(chunk.to_encode))

    def lookup(self, texts: dict[str, str]) -> dict[str, EncodedDocument]:
        store = self.source.store
        stored = store.documents(list(texts))
        changed = [d for d, text in texts.items() if d not in stored or stored[d][0] != text]
        if changed:  # split_index reads one snapshot, so this means a caller mixed indexes up
            raise SemsearchError(f"document {changed[0]!r} is not stored as given in {self.source.path}")
        ids = store.passage_ids_of(list(texts))
        rows = store.passages(ids)
        vectors = store.vectors_of(ids, self.dimension)
        grouped: dict[str, list[int]] = {d: [] for d in texts}
        for pid in ids:
            grouped[rows[pid][0]].append(pid)
        out = {}
        for doc_id, pids in grouped.items():
            pids.sort(key=lambda pid: rows[pid][1].order)
            out[doc_id] = EncodedDocument([rows[pid][1] for pid in pids],
                                          np.stack([vectors[pid] for pid in pids]) if pids
                                          else np.zeros((0, self.dimension), dtype=np.float32))
        return out


def stored_documents(source: Index, batch: int = 256) -> Iterator[dict[str, Any]]:
    """Every document of ``source`` with its metadata, in id order (``{"id", "text", "metadata"}``)."""
    for rows in source.store.iter_documents(batch):
        docs = source.store.documents([doc_id for doc_id, _ in rows])
        for doc_id, text in rows:
            yield {"id": doc_id, "text": text, "metadata": docs[doc_id][1]}


def split_index(source: str | os.PathLike, into: str | os.PathLike, shards: int, *, force: bool = False,
                progress: Progress | None = None) -> tuple[ShardedIndex, AddResult]:
    """Copy the index at ``source`` into a new sharded index of ``shards`` shards at ``into``,
    vectors included (nothing is encoded). The source is read in one snapshot and left as it is."""
    source_path, into_path = Path(source), Path(into)
    if source_path.resolve() == into_path.resolve():
        raise SemsearchError("split into a new folder (--into), not the index itself")
    index = Index.open(source_path)
    info = index.config
    if not info.get("complete", True):
        raise SemsearchError(f"{source_path} is an interrupted build; finish it before splitting")
    index.encoder  # noqa: B018 - the model must still be the recorded one (it is loaded and checked here)
    config = {key: info[key] for key in CONFIG_KEYS if key in info}
    whitening = whitened.recorded(info)  # the source's (refitted on the shards together; raw stays raw)
    config.update(whitening=whitening["mode"], whitening_dims=whitening["dims"])
    with index.store.transaction(immediate=False):  # one read snapshot of the source for the whole copy
        sharded, result = ShardedIndex.build(into_path, stored_documents(index), shards=shards, force=force,
                                             progress=progress, engine=StoredPassages(index),
                                             model=info["model"], **config)
    for shard in sharded.indexes:
        if shard.config["model_fingerprint"] != info["model_fingerprint"]:  # pragma: no cover - checked above
            raise SemsearchError(f"{shard.path} records another model than {source_path}")
    return sharded, result
