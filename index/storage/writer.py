"""Writes to an index: one writer session at a time, holding the index's write lock.

A ``Writer`` is opened by ``Index.writer()`` (or implicitly by ``Index.add``,
``delete`` and ``rebuild``). Entering it takes the lock (``lock.py``) and
makes sure the FAISS file matches the store; each change then goes through
the generation protocol (``generations.py``): rows and vectors change in one
SQLite transaction, and the FAISS file of the new generation is written
before COMMIT. Documents are added in transactions of ``options.COMMIT_EVERY``;
a document whose text is unchanged is not encoded again. The chunks are
encoded by an engine (``engines.py``: in this process by default, or on Ray),
but the skipping, the transactions and their order stay here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from contextlib import closing
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np

from .. import options
from ..ann import registry, tuning
from ..errors import IndexReplacedError, SemsearchError
from ..ingest.engines import Chunk, EncodeSettings, Engine, LocalEngine
from ..ingest.passages import EncodedDocument, encode_documents
from ..model.config import EncoderConfig
from ..model.encoder import Encoder
from ..model.text import normalize_text
from ..records import AddResult, DeleteResult, RebuildResult
from . import whitened
from .generations import Generations
from .lock import WriteLock
from .space import merge_text_index, reclaim
from .store import MetadataStore

log = logging.getLogger("semsearch")
Progress = Callable[[int], None]
OnCommit = Callable[[list[str]], None]  # called with the ids of each committed chunk


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def as_document(doc: Any) -> tuple[str, str, dict]:
    """Accept a mapping ``{"id", "text", "metadata"}`` or an object with those attributes."""
    if isinstance(doc, Mapping):
        doc_id, text, meta = doc.get("id"), doc.get("text"), doc.get("metadata") or {}
    else:
        doc_id, text, meta = getattr(doc, "id", None), getattr(doc, "text", None), getattr(doc, "metadata", None) or {}
    if doc_id is None or str(doc_id) == "":
        raise SemsearchError(f"a document has no id: {str(doc)[:80]}")
    if not isinstance(text, str):
        raise SemsearchError(f"document {doc_id}: text must be a string")
    if not isinstance(meta, Mapping):
        raise SemsearchError(f"document {doc_id}: metadata must be a JSON object")
    return normalize_text(str(doc_id)), normalize_text(text), dict(meta)


def check_overlap(overlap: int, window: int) -> int:
    if not 0 <= overlap <= window // 2:
        raise SemsearchError(f"passage overlap must be between 0 and {window // 2} tokens (got {overlap})")
    return overlap


class Writer:
    """A write session on one index folder; use as a context manager (it holds the lock)."""

    def __init__(self, folder: Path, store: MetadataStore, generations: Generations,
                 encoder: Callable[[], Encoder], *, wait: bool | float = False,
                 batch_size: int | None = None, device: str | None = None, engine: Engine | None = None):
        self.folder = Path(folder)
        self.store = store
        self.generations = generations
        self.encoder = encoder  # the recorded model, loaded on first use
        self.engine = engine or LocalEngine(encoder)  # encodes the chunks of an add (engines.py)
        self.uncommitted: set[str] = set()  # ids of an add's chunks planned but not committed yet
        self.batch_size = batch_size
        self.device = device
        self.lock = WriteLock(self.folder, wait)
        self.removed_leftovers: list[str] = []  # temporary files of a killed writer, removed on entry
        self.refit_shared = False  # True: a sharded index refits every shard's whitening at once

    def __enter__(self) -> "Writer":
        self.lock.acquire()
        try:
            if self.store.replaced():  # this store's folder was swapped out (build --force) since it was opened
                raise IndexReplacedError(
                    f"index {self.folder} was replaced (index build --force) since it was opened; nothing was "
                    "written: open the index again and retry")
            self.removed_leftovers = self.generations.prepare_for_writing()
        except BaseException:
            self.lock.release()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.lock.release()

    # --- add ------------------------------------------------------------------------
    def add(self, documents: Iterable[Any], progress: Progress | None = None,
            on_commit: OnCommit | None = None) -> AddResult:
        """Upsert documents; when an id repeats in the input, the last one wins and it is reported.
        ``on_commit`` is called with the ids of each chunk once it is durable.

        The chunks are encoded by ``self.engine`` (``engines.py``), which may run ahead of the
        commits; the skipping of unchanged texts and the transactions stay here."""
        result = AddResult()
        self.uncommitted = set()
        info = self.store.get_info()
        settings = EncodeSettings(EncoderConfig.from_info(info), int(info["dimension"]),
                                  int(info["passage_overlap"]), str(self.folder))
        # Closed on the way out, so an engine stops its work in flight when a commit fails.
        with closing(self.engine.encode_chunks(self._chunks(documents, result, progress), settings,
                                               progress)) as encoded_chunks:
            for chunk, encoded in encoded_chunks:
                self._add_chunk(chunk, encoded, result, on_commit)  # refits the whitening when due
        reclaim(self.store.conn)  # a WAL grown past its bound is checkpointed and truncated
        self.tune_when_due()
        return result

    def _chunks(self, documents: Iterable[Any], result: AddResult, progress: Progress | None) -> Iterator[Chunk]:
        """The input in chunks of ``options.COMMIT_EVERY`` documents, each planned when it is asked for."""
        seen: set[str] = set()
        chunk: dict[str, tuple[str, dict]] = {}
        for doc in documents:
            doc_id, text, meta = as_document(doc)
            if doc_id in seen:
                result.duplicates.append(doc_id)
                chunk.pop(doc_id, None)  # keep the last occurrence, in input order
            seen.add(doc_id)
            chunk[doc_id] = (text, meta)
            if len(chunk) >= options.COMMIT_EVERY:
                yield self._plan_chunk(chunk, result, progress)
                chunk = {}
        if chunk:
            yield self._plan_chunk(chunk, result, progress)

    def _plan_chunk(self, chunk: dict[str, tuple[str, dict]], result: AddResult,
                    progress: Progress | None) -> Chunk:
        """Which documents of a chunk need encoding: those whose text is not stored as it is, and those
        that an earlier chunk, not yet committed, may still change."""
        existing = self.store.existing(list(chunk))
        planned = Chunk(ids=list(chunk))
        for doc_id, (text, meta) in chunk.items():
            meta_json = json.dumps(meta, ensure_ascii=False, sort_keys=True)
            digest = content_hash(text)
            old = existing.get(doc_id)
            if old is not None and old[0] == digest and doc_id not in self.uncommitted:
                if old[1] != meta_json:
                    planned.meta_only.append((doc_id, meta_json))
                    result.metadata_updated += 1
                else:
                    result.unchanged += 1
                if progress:
                    progress(1)
                continue
            planned.to_encode[doc_id] = (text, meta_json, digest)
        self.uncommitted.update(chunk)
        return planned

    def _add_chunk(self, chunk: Chunk, encoded: Mapping[str, EncodedDocument], result: AddResult,
                   on_commit: OnCommit | None) -> None:
        """Commit one chunk: its encoded documents, passages and vectors, and its new metadata."""
        to_encode, meta_only = chunk.to_encode, chunk.meta_only
        existing = self.store.existing(list(to_encode))
        for doc_id in [d for d, v in to_encode.items() if d in existing and existing[d][0] == v[2]]:
            # Stored as it is by an earlier chunk of this add, committed after this one was planned.
            meta_json = to_encode.pop(doc_id)[1]
            if existing[doc_id][1] != meta_json:
                meta_only.append((doc_id, meta_json))
                result.metadata_updated += 1
            else:
                result.unchanged += 1
        self.uncommitted.difference_update(chunk.ids)
        if not to_encode:  # nothing to encode: no new generation, no FAISS rewrite
            if meta_only:
                with self.store.transaction():
                    self.store.update_metadata(meta_only)
            if on_commit:
                on_commit(list(chunk.ids))
            return
        new_ids: list[int] = []
        new_vecs: list[np.ndarray] = []
        with self.generations.commit() as commit:
            # The passages being replaced, in one query (empty documents keep theirs).
            removed = self.store.passage_ids_of([d for d in to_encode if encoded[d].passages])
            for doc_id, (text, meta_json, digest) in to_encode.items():
                doc = encoded[doc_id]
                if not doc.passages:
                    result.skipped_empty.append(doc_id)
                    continue
                new_ids += self.store.write_document(doc_id, text, meta_json, digest, doc.passages, doc.vectors)
                new_vecs.append(doc.vectors)
                result.passages += len(doc.passages)
                if doc_id in existing:
                    result.updated += 1
                else:
                    result.added += 1
            self.store.update_metadata(meta_only)
            commit.remove(removed)
            info = self.store.get_info()
            # FAISS holds the vectors as the recorded transform makes them (SQLite keeps them raw); when a
            # fit is due (a whitened index's first chunk, or it has doubled) it is made now, these included.
            if new_ids and not self.refit_shared and whitened.due(info, self.store.counts()[1]):
                commit.replace(whitened.refit_in_commit(self.store, self.encoder, self.generations.folder))
            elif new_ids:
                commit.add(np.asarray(new_ids, dtype=np.int64),
                           whitened.apply(whitened.transform(self.store, info), np.concatenate(new_vecs)))
        if on_commit:
            skipped = set(result.skipped_empty)
            on_commit([d for d in chunk.ids if d not in skipped])

    def record(self, values: Mapping[str, Any]) -> None:
        """Record settings in the index (e.g. a FAQ calibration); they do not change the vectors."""
        with self.store.transaction():
            self.store.set_info(dict(values))

    def finish_build(self) -> None:
        """Refit the whitening where the last fit saw fewer passages than are stored (SciFact: 0.506
        nDCG@10 fitted on its first 7,493, 0.518 on all 9,631), then record that the build finished."""
        if not self.refit_shared and whitened.partial(self.store.get_info(), self.store.counts()[1]):
            self.refit(force=True)
        with self.store.transaction():
            self.store.set_info({"complete": True})

    # --- delete -----------------------------------------------------------------------
    def delete(self, ids: Iterable[str]) -> DeleteResult:
        """Delete documents by id; ids that are not stored are reported as missing."""
        wanted = list(dict.fromkeys(normalize_text(str(i)) for i in ids))
        with self.generations.commit() as commit:
            deleted, removed = self.store.delete_documents(wanted)
            commit.remove(removed)
        merge_text_index(self.store.conn, len(deleted))  # the text index's delete markers
        reclaim(self.store.conn)  # a large delete gives its pages back and truncates the WAL
        gone = set(deleted)
        return DeleteResult(deleted=deleted, missing=[i for i in wanted if i not in gone])

    # --- rebuild ----------------------------------------------------------------------
    def rebuild(self, request: EncoderConfig, *, passage_overlap: int | None = None,
                index_type: str | None = None, progress: Progress | None = None) -> RebuildResult:
        """Re-encode every stored text with ``request`` (a merged configuration).

        New passages go to a side table; the switch (passages, FAISS file and
        recorded configuration) happens in one transaction at the end, so
        searches see the old index until the new one is complete.
        """
        started = time.monotonic()
        info = self.store.get_info()
        encoder = Encoder.for_config(request, batch_size=self.batch_size, device=self.device)
        overlap = check_overlap(info["passage_overlap"] if passage_overlap is None else passage_overlap,
                                encoder.window)
        self.store.start_next_passages()
        kind = index_type or info.get("index_type", options.DEFAULT_INDEX_TYPE)
        # Collect the new vectors in memory only when they will end as a flat index; other types are
        # built from the stored vectors at the switch (in bounded memory where the type allows it).
        # A whitened index is fitted on the new vectors at the switch, and built from them then.
        target = {**info, "model": encoder.describe()["model"], "layer": encoder.layer}
        in_memory = (registry.resolve_type(kind, self.store.counts()[1]) == "flat"
                     and not whitened.decision(target).whiten)
        new = registry.empty(encoder.dimension) if in_memory else None
        n_docs = n_passages = 0
        try:
            for rows in self.store.iter_documents():
                encoded: dict[str, EncodedDocument] = encode_documents(encoder, dict(rows), overlap, progress)
                with self.store.transaction():
                    for doc_id, doc in encoded.items():
                        ids = self.store.write_next_passages(doc_id, doc.passages, doc.vectors)
                        if ids and new is not None:
                            new.add(np.asarray(ids, dtype=np.int64), doc.vectors)
                        n_passages += len(doc.passages)
                        n_docs += 1
            with self.generations.commit() as commit:
                self.store.swap_in_next_passages()
                self.store.set_info({**encoder.describe(), "passage_tokens": encoder.window,
                                     "passage_overlap": overlap,
                                     "index_type": kind})
                info = self._fit(lambda: encoder, n_passages)  # refitted on the new vectors (or recorded as raw)
                if new is None:
                    new = registry.build(kind, whitened.index_dimension(info), n_passages,
                                         whitened.faiss_vectors(self.store, info), workdir=self.generations.folder)
                commit.replace(new)
        except BaseException:
            self.store.drop_next_passages()
            raise
        reclaim(self.store.conn)  # the old passages' pages
        self.tune_when_due()
        return RebuildResult(documents=n_docs, passages=n_passages, seconds=time.monotonic() - started)

    def reindex(self, index_type: str | None = None) -> RebuildResult:
        """Build the vector index again from the stored vectors (switching to ``index_type`` when
        given), the whitening refitted on them; no document is encoded (the fit encodes its samples)."""
        started = time.monotonic()
        if index_type is not None:
            registry.resolve_type(index_type, 0)  # validates the name
        n_docs, n = self.store.counts()
        with self.generations.commit() as commit:
            if index_type is not None:
                self.store.set_info({"index_type": index_type})
            info = self._fit(self.encoder, n)
            commit.replace(registry.build(info.get("index_type", options.DEFAULT_INDEX_TYPE),
                                          whitened.index_dimension(info), n, whitened.faiss_vectors(self.store, info),
                                          workdir=self.generations.folder))
        self.tune_when_due()
        return RebuildResult(documents=n_docs, passages=n, seconds=time.monotonic() - started)

    # --- whitening (``whitened``) ----------------------------------------------------------------
    def _fit(self, encoder: Callable[[], Encoder], passages: int) -> dict[str, Any]:
        return whitened.fit_in_store(self.store, encoder, passages)

    def refit(self, force: bool = False) -> bool:
        """Refit the whitening when due, or always with ``force``, rewriting the FAISS vectors from
        the stored ones (``whitened.refit``); returns whether it refitted."""
        return whitened.refit(self.store, self.generations, self.encoder, force)

    def configure_whitening(self, mode: str | None, dims: int | None) -> None:
        """Record a new whitening configuration (None: keep that part; ``dims`` 0: all); the caller refits."""
        self.record({whitened.SETTING: whitened.reconfigured(self.store.get_info(), mode, dims)})

    # --- search settings ---------------------------------------------------------------------
    def tune_when_due(self) -> None:
        """``tune`` after a write, saying so when it measured something."""
        before = self.store.get_info().get("search_tuning")
        result = self.tune()
        if result is not None and result.as_info() != before:
            what = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in result.settings.items())
            log.info("tuned the %s index's search: %s gives recall@%d %.3f against exact search (target %.2f%s; "
                     "%d sampled passages, %.1f s)", result.kind, what, result.k, result.recall, result.target,
                     "" if result.reached else ", not reached: the best setting is kept", result.queries,
                     result.seconds)

    def tune(self, force: bool = False) -> tuning.Tuning | None:
        """Tune an approximate index's search settings to the recorded recall target when due
        (never tuned for this structure, or grown since; see ``tuning``), or always with ``force``.
        Records and returns the tuning; None for an exact index."""
        info = self.store.get_info()
        target = float(info.get("target_recall", options.DEFAULT_TARGET_RECALL))
        vectors = self.generations.current()
        recorded = tuning.Tuning.from_info(info.get("search_tuning"))
        if not vectors.tuning_ladder():
            if recorded is not None:
                self.record({"search_tuning": None})
            return None
        if not force and not tuning.due(vectors, recorded, target):
            return recorded
        dimension, whitening = int(info["dimension"]), whitened.transform(self.store, info)
        ids = self.store.passage_ids()
        if not len(ids):  # nothing stored yet: nothing to measure (tuned after the first add)
            return None
        sample = np.sort(np.random.default_rng(0).choice(ids, min(tuning.QUERIES, len(ids)), replace=False))
        stored = self.store.vectors_of(sample, dimension)
        queries = tuning.proxy_queries(whitened.apply(whitening, np.stack([stored[int(i)] for i in sample])))

        def vectors_of(wanted):  # as the FAISS index holds them
            raw = self.store.vectors_of(wanted, dimension)  # whitened in one product, not one per vector
            return dict(zip(raw, whitened.apply(whitening, np.stack(list(raw.values()))))) if raw else {}
        result = tuning.tune(vectors, queries, whitened.faiss_vectors(self.store, info), vectors_of, target)
        self.record({"search_tuning": result.as_info()})
        return result

    # --- repair steps (index check/repair) ---------------------------------------------
    def drop_interrupted_rebuild(self) -> bool:
        if not self.store.has_next_passages():
            return False
        self.store.drop_next_passages()
        return True

    def remove_orphan_passages(self) -> int:
        """Remove passages whose document is gone; returns how many."""
        orphans = self.store.orphan_passage_ids()
        if orphans:
            with self.generations.commit() as commit:
                self.store.delete_passages(orphans)
                commit.remove(orphans)
        return len(orphans)

    def reencode_bare_documents(self) -> int:
        """Encode again the documents that have no passages; returns how many were."""
        bare = self.store.documents_without_passages()
        if not bare:
            return 0
        docs = self.store.documents(bare)
        with self.store.transaction():  # their content hash is stored: forget it to force encoding
            self.store.forget_content_hashes(bare)
        result = self.add({"id": d, "text": t, "metadata": m} for d, (t, m) in docs.items())
        return result.added + result.updated

    def rewrite_vectors(self) -> int:
        """Rebuild the FAISS file of the committed generation from the stored vectors; returns their count."""
        self.generations.load(rebuild_kind=self.store.get_info().get("index_type", options.DEFAULT_INDEX_TYPE))
        expected = self.generations.stored_ids()
        if not self.generations.vectors.agrees_with(expected):  # pragma: no cover - load guarantees it
            raise SemsearchError("could not make the FAISS index agree with the stored passages")
        self.generations.save()
        return expected.count
