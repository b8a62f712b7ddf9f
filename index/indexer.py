"""The indexer: an index directory (SQLite store + FAISS file) and the writes on it.

``Index.create`` fixes the configuration (model, layer, pooling, window);
``add`` upserts documents (unchanged texts are not re-encoded), ``delete``
removes them, ``rebuild`` re-encodes every stored text with a new
configuration while the old state stays searchable until the switch.

Write order, so that no crash loses or mixes state: (1) one SQLite
transaction stores documents, passages and their vectors and bumps the
generation; (2) the FAISS file for that generation is written atomically.
A FAISS file that does not match the committed generation is ignored and
rebuilt from the stored vectors.
"""

from __future__ import annotations

import hashlib
from glob import escape as glob_escape
import json
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from .encoder import DEFAULT_BATCH_SIZE, Encoder, normalize_text, resolve_model
from .errors import (
    ConfigMismatchError,
    IndexExistsError,
    IndexNotFoundError,
    SemsearchError,
)
from .lock import WriteLock
from .passages import split_passages
from .store import DB_NAME, SCHEMA_VERSION, MetadataStore, NewPassage, _now
from .vectors import VectorIndex, n_lists, resolve_type, vector_files

DEFAULT_PASSAGE_OVERLAP = 32  # tokens; at most a quarter of the window
COMMIT_EVERY = 1000  # documents per committed transaction while adding

Progress = Callable[[int], None]
OnCommit = Callable[[list[str]], None]  # called with the ids of each committed chunk


@dataclass
class IndexInfo:
    """What ``semsearch index info`` shows."""

    path: str
    model: str
    model_fingerprint: str
    layer: int
    pooling: str
    dimension: int
    max_length: int
    passage_tokens: int
    passage_overlap: int
    precision: str
    index_type: str
    vector_index: str  # what the FAISS index is now (auto and untrained IVF resolve by size)
    schema_version: int
    generation: int
    documents: int
    passages: int
    vectors: int
    complete: bool
    created_at: str
    updated_at: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class AddResult:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    metadata_updated: int = 0
    skipped_empty: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    passages: int = 0

    @property
    def documents(self) -> int:
        return self.added + self.updated + self.unchanged + self.metadata_updated


@dataclass
class DeleteResult:
    deleted: list[str]
    missing: list[str]


@dataclass
class RebuildResult:
    documents: int
    passages: int
    seconds: float


def encoder_key(cfg: Mapping[str, Any]) -> tuple:
    """What decides the vectors: a change means the encoder must be reloaded."""
    return tuple(cfg.get(k) for k in ("model", "model_fingerprint", "layer", "pooling", "max_length", "precision"))


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def is_index(path: Path) -> bool:
    return (Path(path) / DB_NAME).is_file()


def _replace_index(new: Path, path: Path) -> None:
    """Put the index folder ``new`` at ``path`` in place of the index there, then delete the old one.

    Linux swaps the two folders in one step (renameat2 RENAME_EXCHANGE), so
    ``path`` always holds a whole index. Elsewhere two renames are used, and
    :func:`_recover` puts the old index back if a crash falls between them.
    """
    old = path.parent / f".{path.name}.old-{os.getpid()}"
    if _exchange(new, path):
        os.rename(new, old)
    else:
        os.rename(path, old)
        os.rename(new, path)
    shutil.rmtree(old, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _recover(path: Path) -> None:
    """After a crash between the two renames of :func:`_replace_index`, put the old index back;
    remove leftovers of interrupted creates and replacements."""
    parent = path.parent
    if not parent.is_dir():
        return
    leftovers = sorted(parent.glob(f".{glob_escape(path.name)}.old-*"), key=lambda p: p.stat().st_mtime)
    if not is_index(path) and leftovers and is_index(leftovers[-1]):
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()
        if not path.exists():
            os.rename(leftovers.pop(), path)
    for kind in ("old", "creating", "building"):
        for leftover in parent.glob(f".{glob_escape(path.name)}.{kind}-*"):
            pid = leftover.name.rsplit("-", 1)[-1]
            if leftover.exists() and not (pid.isdigit() and _alive(int(pid))):
                shutil.rmtree(leftover, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _as_document(doc: Any) -> tuple[str, str, dict]:
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


class Index:
    """An index directory. Use :meth:`create`, :meth:`open` or :meth:`build`."""

    def __init__(self, path: Path, store: MetadataStore, *, batch_size: int = DEFAULT_BATCH_SIZE,
                 device: str | None = None, wait: bool | float = False):
        self.path = Path(path)
        self.store = store
        self.batch_size = batch_size
        self.device = device
        self.wait = wait
        self._encoder: Encoder | None = None
        self._encoder_key: tuple | None = None
        self._vectors: VectorIndex | None = None
        self._vectors_generation = -1

    # --- opening and creating -------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        model: str | os.PathLike | None = None,
        layer: int = -2,
        pooling: str = "mean",
        *,
        max_length: int | None = None,
        passage_overlap: int | None = None,
        precision: str | None = None,
        index_type: str = "flat",
        batch_size: int = DEFAULT_BATCH_SIZE,
        device: str | None = None,
        force: bool = False,
        complete: bool = True,
    ) -> "Index":
        """A new, empty index at ``path`` (``model=None``: the embedded all-MiniLM-L6-v2).

        With ``force=True`` an existing index there is replaced by the new,
        empty one; ``build(force=True)`` instead fills the new index aside and
        swaps it in when complete. ``complete=False`` marks an index whose
        build is still going on (``build`` resumes such an index).
        """
        path = Path(path)
        _recover(path)
        if path.exists():
            if is_index(path):
                if not force:
                    raise IndexExistsError(f"an index already exists at {path}; pass --force to replace it")
            elif path.is_dir() and any(path.iterdir()):
                raise IndexExistsError(f"{path} exists and is not an empty folder or a semsearch index")
            elif not path.is_dir():
                raise IndexExistsError(f"{path} exists and is not a folder")
        resolve_type(index_type, 0)  # validates the name before anything is written
        encoder = Encoder.load(model, layer=layer, pooling=pooling, max_length=max_length,
                               batch_size=batch_size, precision=precision, device=device)
        if passage_overlap is None:
            passage_overlap = min(DEFAULT_PASSAGE_OVERLAP, encoder.window // 4)
        if not 0 <= passage_overlap <= encoder.window // 2:
            raise SemsearchError(
                f"passage overlap must be between 0 and {encoder.window // 2} tokens (got {passage_overlap})"
            )
        # Made aside and renamed into place, so a crash never leaves a half-made index at `path`.
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.parent / f".{path.name}.creating-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:
            store = MetadataStore.connect(staging, create=True)
            now = _now()
            with store.transaction():
                store.set_info({
                    **encoder.describe(),
                    "passage_tokens": encoder.window,
                    "passage_overlap": passage_overlap,
                    "index_type": index_type,
                    "generation": 0,
                    "next_passage_id": 1,
                    "complete": complete,
                    "created_at": now,
                    "updated_at": now,
                })
            store.close()
            VectorIndex.empty(encoder.dimension).save(staging, 0)
            if is_index(path):  # force=True: atomically exchange the old index for the new one
                _replace_index(staging, path)
            else:
                if path.is_dir():
                    path.rmdir()
                os.rename(staging, path)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        index = cls.open(path, batch_size=batch_size, device=device)
        index._encoder, index._encoder_key = encoder, encoder_key(index.config)
        return index

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        model: str | os.PathLike | None = None,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        device: str | None = None,
        wait: bool | float = False,
    ) -> "Index":
        """Open an existing index. ``model``, when given, must be the one the index records."""
        path = Path(path)
        _recover(path)
        if not is_index(path):
            hint = " (set --index or $SEMSEARCH_INDEX)" if not path.exists() else ""
            raise IndexNotFoundError(f"no semsearch index at {path}{hint}; create one with `semsearch index build`")
        index = cls(path, MetadataStore.connect(path), batch_size=batch_size, device=device, wait=wait)
        if model is not None:
            name, _ = resolve_model(model)
            if name != index.config["model"]:
                raise ConfigMismatchError(
                    f"index {path} was built with model {index.config['model']!r}, not {name!r}; "
                    "to switch models run `semsearch index rebuild --model ...`"
                )
        return index

    @classmethod
    def build(
        cls,
        path: str | os.PathLike,
        documents: Iterable[Any],
        *,
        force: bool = False,
        progress: Progress | None = None,
        on_commit: OnCommit | None = None,
        **config: Any,
    ) -> tuple["Index", AddResult]:
        """Create an index at ``path`` and add ``documents``.

        Replacing an existing index (``force=True``) builds the new one aside
        and swaps it in only when it is complete, so a failed build loses
        nothing. A build that was interrupted (``complete`` is false) is
        resumed: stored unchanged documents are not encoded again.
        """
        path = Path(path)
        if is_index(path) and not force:
            existing = cls.open(path)
            if existing.config.get("complete", True):
                raise IndexExistsError(f"an index already exists at {path}; pass --force to replace it")
            with existing._writing():
                result = existing._add(documents, progress, on_commit)
                with existing.store.transaction():
                    existing.store.set_info({"complete": True})
            return existing, result
        if is_index(path):
            staging = path.parent / f".{path.name}.building-{os.getpid()}"
            shutil.rmtree(staging, ignore_errors=True)
            try:
                new = cls.create(staging, **config)
                with new._writing():
                    result = new._add(documents, progress, on_commit)
                new.store.close()
                _replace_index(staging, path)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            return cls.open(path, batch_size=config.get("batch_size", DEFAULT_BATCH_SIZE)), result
        new = cls.create(path, complete=False, **config)
        with new._writing():
            result = new._add(documents, progress, on_commit)
            with new.store.transaction():
                new.store.set_info({"complete": True})
        return new, result

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> "Index":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- configuration ---------------------------------------------------------------------------
    @property
    def config(self) -> dict[str, Any]:
        return self.store.get_info()

    @property
    def encoder(self) -> Encoder:
        """The recorded model, loaded once per configuration; refuses a model whose weights
        no longer match. Follows a rebuild committed by another process."""
        cfg = self.config
        if self._encoder is None or self._encoder_key != encoder_key(cfg):
            encoder = Encoder.load(
                cfg["model"], layer=cfg["layer"], pooling=cfg["pooling"], max_length=cfg["max_length"],
                batch_size=self.batch_size, precision=cfg["precision"], device=self.device,
            )
            self._check_encoder(encoder, cfg)
            self._encoder, self._encoder_key = encoder, encoder_key(cfg)
        return self._encoder

    @contextmanager
    def snapshot(self):
        """One read snapshot of the store, with ``vectors`` matching its committed generation.

        Searches run inside one, so a writer committing meanwhile (a rebuild
        replaces every passage id) can never pair FAISS ids of one state with
        rows of another.
        """
        with self.store.transaction(immediate=False):
            if self._vectors is None or self.store.generation() != self._vectors_generation:
                self._load_vectors()
            yield self

    def _check_encoder(self, encoder: Encoder, cfg: dict) -> None:
        if encoder.dimension != cfg["dimension"]:
            raise ConfigMismatchError(
                f"model {cfg['model']} gives {encoder.dimension}-d vectors but index {self.path} "
                f"stores {cfg['dimension']}-d ones; run `semsearch index rebuild`"
            )
        if encoder.fingerprint != cfg["model_fingerprint"]:
            raise ConfigMismatchError(
                f"model {cfg['model']} no longer matches index {self.path} (weights fingerprint "
                f"{encoder.fingerprint}, recorded {cfg['model_fingerprint']}); re-encode with "
                "`semsearch index rebuild`"
            )

    def info(self) -> IndexInfo:
        cfg = self.config
        docs, passages = self.store.counts()
        vectors = self.vectors
        return IndexInfo(
            path=str(self.path), model=cfg["model"], model_fingerprint=cfg["model_fingerprint"],
            layer=cfg["layer"], pooling=cfg["pooling"], dimension=cfg["dimension"],
            max_length=cfg["max_length"], passage_tokens=cfg["passage_tokens"],
            passage_overlap=cfg["passage_overlap"], precision=cfg["precision"],
            index_type=cfg.get("index_type", "flat"), vector_index=vectors.describe(),
            schema_version=SCHEMA_VERSION,
            generation=self._vectors_generation, documents=docs, passages=passages,
            vectors=vectors.ntotal, complete=bool(cfg.get("complete", True)),
            created_at=cfg["created_at"], updated_at=cfg["updated_at"],
        )

    def check(self, sample: int = 20):
        """Verify counts, the FAISS id mapping, the model and a re-encoded sample (see ``index.check``)."""
        from .check import check_index

        return check_index(self, sample=sample)

    def repair(self):
        """Rewrite what can be rebuilt from SQLite (FAISS file, leftovers); loses no document."""
        from .check import repair_index

        return repair_index(self)

    # --- the vector index, consistent with the committed store -------------------------
    @property
    def vectors(self) -> VectorIndex:
        """The FAISS index matching the committed generation (reloaded when it changed)."""
        if self._vectors is None or self.store.generation() != self._vectors_generation:
            self._load_vectors()
        return self._vectors

    def _load_vectors(self, rebuild_kind: str = "flat") -> bool:
        """Load the FAISS file of the committed generation; returns False when it had to be rebuilt.

        A missing, damaged or mismatched file is never served: the index is
        rebuilt from the vectors stored in SQLite (readers build an exact flat
        index; writers the configured type, then save it).
        """
        store = self.store
        with store.transaction(immediate=False):  # one read snapshot: generation, counts, vectors
            generation = store.generation()
            dimension = int(store.get_info()["dimension"])
            path = self.path / f"vectors-{generation}.faiss"
            vectors = None
            if path.is_file():
                try:
                    vectors = self._matching(VectorIndex.load(path), dimension)
                except (SemsearchError, FileNotFoundError):
                    vectors = None
            from_file = vectors is not None
            if vectors is None:
                n = store.counts()[1]
                vectors = VectorIndex.build(rebuild_kind, dimension, n, lambda: store.iter_vectors(dimension))
        self._vectors, self._vectors_generation = vectors, generation
        return from_file

    def _matching(self, vectors: VectorIndex, dimension: int) -> VectorIndex | None:
        """``vectors`` if its ids are exactly the stored passages' (HNSW: plus tombstones), else None."""
        if vectors.dimension != dimension:
            return None
        if vectors.kind == "hnsw":
            stored = np.fromiter((r[0] for r in self.store.conn.execute("SELECT id FROM passages")), dtype=np.int64)
            in_file = vectors.all_ids()
            if np.setdiff1d(stored, in_file).size or len(np.unique(in_file)) != len(in_file):
                return None
            vectors.deleted = set(np.setdiff1d(in_file, stored).tolist())
            return vectors
        n_passages, id_sum = self.store.conn.execute(
            "SELECT count(*), coalesce(sum(id), 0) FROM passages").fetchone()
        if vectors.ntotal != n_passages or int(vectors.ids().sum()) != id_sum:
            return None
        return vectors

    def _save_vectors(self, generation: int) -> None:
        """Write the FAISS file for ``generation`` and remove the files of other generations."""
        self._write_vectors(generation)
        self._remove_other_files(generation)

    @contextmanager
    def _commit(self):
        """One write, all or nothing; yields the new generation.

        The body changes rows (and ``self._vectors``) inside a SQLite
        transaction; the FAISS file of the new generation is written before
        COMMIT. Any failure (a full disk included) rolls back, so the index
        stays exactly as it was; a FAISS file written for a generation that was
        never committed is never loaded and is removed by the next writer.
        """
        try:
            with self.store.transaction():
                generation = self.store.bump_generation()
                yield generation
                self._write_vectors(generation)
        except BaseException:
            self._vectors, self._vectors_generation = None, -1  # may be ahead of the store: reload
            raise
        self._remove_other_files(generation)

    def _remove_other_files(self, generation: int) -> None:
        for gen, file in vector_files(self.path).items():
            if gen != generation:
                file.unlink(missing_ok=True)

    def _write_vectors(self, generation: int) -> None:
        """Write the FAISS file for ``generation``, first switching type or compacting if due."""
        kind = self.config.get("index_type", "flat")
        n = self.store.counts()[1]
        current = self._vectors
        wanted = resolve_type(kind, n)
        drifted = current.nlist is not None and n_lists(n) > 2 * current.nlist
        if wanted != current.kind or drifted or current.needs_compaction():
            dimension = current.dimension
            self._vectors = VectorIndex.build(kind, dimension, n, lambda: self.store.iter_vectors(dimension))
        self._vectors.save(self.path, generation)
        self._vectors_generation = generation

    @contextmanager
    def _writing(self):
        """Hold the write lock; make sure the FAISS file matches the store before writing."""
        with WriteLock(self.path, self.wait):
            for leftover in self.path.glob(".vectors-*.tmp-*"):  # a killed writer's; we hold the lock
                leftover.unlink(missing_ok=True)
            from_file = self._load_vectors(rebuild_kind=self.config.get("index_type", "flat"))
            if not from_file or len(vector_files(self.path)) > 1:
                self._save_vectors(self._vectors_generation)
            yield

    # --- writes -----------------------------------------------------------------------------
    def add(self, documents: Iterable[Any], progress: Progress | None = None,
            on_commit: OnCommit | None = None) -> AddResult:
        """Upsert documents (``{"id", "text", "metadata"}`` mappings or objects).

        Committed every ``COMMIT_EVERY`` documents; a document whose text is
        unchanged is not encoded again (only its metadata is updated). When an
        id repeats in the input, the last one wins and it is reported.
        ``on_commit`` is called with the ids of each chunk once it is durable.
        """
        with self._writing():
            return self._add(documents, progress, on_commit)

    def _add(self, documents: Iterable[Any], progress: Progress | None, on_commit: OnCommit | None = None) -> AddResult:
        result = AddResult()
        seen: set[str] = set()
        chunk: dict[str, tuple[str, dict]] = {}
        for doc in documents:
            doc_id, text, meta = _as_document(doc)
            if doc_id in seen:
                result.duplicates.append(doc_id)
                chunk.pop(doc_id, None)  # keep the last occurrence, in input order
            seen.add(doc_id)
            chunk[doc_id] = (text, meta)
            if len(chunk) >= COMMIT_EVERY:
                self._add_chunk(chunk, result, progress, on_commit)
                chunk = {}
        if chunk:
            self._add_chunk(chunk, result, progress, on_commit)
        return result

    def _add_chunk(self, chunk: dict[str, tuple[str, dict]], result: AddResult, progress: Progress | None,
                   on_commit: OnCommit | None = None) -> None:
        existing = self.store.existing(list(chunk))
        to_encode: dict[str, tuple[str, str, str]] = {}
        meta_only: list[tuple[str, str]] = []
        for doc_id, (text, meta) in chunk.items():
            meta_json = json.dumps(meta, ensure_ascii=False, sort_keys=True)
            digest = content_hash(text)
            old = existing.get(doc_id)
            if old is not None and old[0] == digest:
                if old[1] != meta_json:
                    meta_only.append((doc_id, meta_json))
                    result.metadata_updated += 1
                else:
                    result.unchanged += 1
                if progress:
                    progress(1)
                continue
            to_encode[doc_id] = (text, meta_json, digest)
        if not to_encode:  # nothing to encode: no new generation, no FAISS rewrite
            if meta_only:
                with self.store.transaction():
                    self.store.update_metadata(meta_only)
            if on_commit:
                on_commit(list(chunk))
            return
        encoded = self._encode_documents({d: v[0] for d, v in to_encode.items()}, progress)
        new_ids: list[int] = []
        new_vecs: list[np.ndarray] = []
        with self._commit():
            # The passages being replaced, in one query (empty documents keep theirs).
            removed = self.store.passage_ids_of([d for d in to_encode if encoded.get(d)])
            for doc_id, (text, meta_json, digest) in to_encode.items():
                passages = encoded.get(doc_id)
                if not passages:
                    result.skipped_empty.append(doc_id)
                    continue
                ids = self.store.write_document(doc_id, text, meta_json, digest, passages)
                new_ids += ids
                new_vecs += [p.vector for p in passages]
                result.passages += len(passages)
                if doc_id in existing:
                    result.updated += 1
                else:
                    result.added += 1
            self.store.update_metadata(meta_only)
            self._vectors.remove(removed)
            if new_ids:
                self._vectors.add(np.asarray(new_ids, dtype=np.int64), np.stack(new_vecs))
        if on_commit:
            skipped = set(result.skipped_empty)
            on_commit([d for d in chunk if d not in skipped])

    def _encode_documents(
        self, texts: dict[str, str], progress: Progress | None,
        encoder: Encoder | None = None, overlap: int | None = None,
    ) -> dict[str, list[NewPassage]]:
        """Split each text into token windows and encode all windows of the batch together.

        Progress is reported in documents, spread evenly over the encoded windows.
        """
        encoder = encoder or self.encoder
        overlap = int(self.config["passage_overlap"]) if overlap is None else overlap
        doc_ids = list(texts)
        tokenized = encoder.tokenize([texts[d] for d in doc_ids])
        spans_of = {
            doc_id: split_passages(tok.ids, tok.offsets, len(texts[doc_id]), encoder.window, overlap)
            for doc_id, tok in zip(doc_ids, tokenized)
        }
        windows = [span.token_ids for spans in spans_of.values() for span in spans]
        reported = 0
        done = 0

        def tick(n_windows: int) -> None:
            nonlocal reported, done
            done += n_windows
            target = len(doc_ids) * done // max(1, len(windows))
            if target > reported:
                progress(target - reported)
                reported = target

        vectors = encoder.encode_ids(windows, progress=tick if progress else None)
        if progress and reported < len(doc_ids):
            progress(len(doc_ids) - reported)
        out: dict[str, list[NewPassage]] = {}
        i = 0
        for doc_id, spans in spans_of.items():
            text = texts[doc_id]
            out[doc_id] = [
                NewPassage(span.order, span.start, span.end, text[span.start : span.end], vectors[i + j])
                for j, span in enumerate(spans)
            ]
            i += len(spans)
        return out

    def delete(self, ids: Iterable[str]) -> DeleteResult:
        """Delete documents by id; ids that are not stored are reported as missing."""
        wanted = list(dict.fromkeys(normalize_text(str(i)) for i in ids))
        with self._writing():
            with self._commit():
                deleted, removed = self.store.delete_documents(wanted)
                self._vectors.remove(removed)
        gone = set(deleted)
        return DeleteResult(deleted=deleted, missing=[i for i in wanted if i not in gone])

    def rebuild(
        self,
        model: str | os.PathLike | None = None,
        layer: int | None = None,
        pooling: str | None = None,
        *,
        max_length: int | None = None,
        passage_overlap: int | None = None,
        precision: str | None = None,
        index_type: str | None = None,
        progress: Progress | None = None,
    ) -> RebuildResult:
        """Re-encode every stored text with a new configuration (unset values keep the recorded ones).

        New passages are written to a side table; the switch (passages, FAISS
        file and recorded configuration) happens in one transaction at the end,
        so searches see the old index until the new one is complete. When only
        ``index_type`` changes, the stored vectors are re-indexed without
        encoding anything.
        """
        started = time.monotonic()
        cfg = self.config
        if index_type is not None:
            resolve_type(index_type, 0)  # validates the name
        only_type = index_type is not None and all(
            v is None for v in (model, layer, pooling, max_length, passage_overlap, precision))
        if only_type:
            return self._reindex(index_type, started)
        encoder = Encoder.load(
            cfg["model"] if model is None else model,
            layer=cfg["layer"] if layer is None else layer,
            pooling=cfg["pooling"] if pooling is None else pooling,
            max_length=cfg["max_length"] if max_length is None and model is None else max_length,
            batch_size=self.batch_size,
            precision=cfg["precision"] if precision is None else precision,
            device=self.device,
        )
        overlap = cfg["passage_overlap"] if passage_overlap is None else passage_overlap
        if not 0 <= overlap <= encoder.window // 2:
            raise SemsearchError(f"passage overlap must be between 0 and {encoder.window // 2} tokens")
        with self._writing():
            self.store.start_next_passages()
            new = VectorIndex.empty(encoder.dimension)
            n_docs = n_passages = 0
            try:
                for rows in self.store.iter_documents():
                    encoded = self._encode_documents(dict(rows), progress, encoder=encoder, overlap=overlap)
                    with self.store.transaction():
                        for doc_id, passages in encoded.items():
                            ids = self.store.write_passages(doc_id, passages, table="passages_next")
                            if ids:
                                new.add(np.asarray(ids, dtype=np.int64), np.stack([p.vector for p in passages]))
                            n_passages += len(passages)
                            n_docs += 1
                with self._commit():
                    self.store.swap_in_next_passages()
                    self.store.set_info({**encoder.describe(), "passage_tokens": encoder.window,
                                         "passage_overlap": overlap,
                                         "index_type": index_type or cfg.get("index_type", "flat")})
                    self._vectors = new
            except BaseException:
                self.store.drop_next_passages()
                raise
        self._encoder, self._encoder_key = encoder, encoder_key(self.config)
        return RebuildResult(documents=n_docs, passages=n_passages, seconds=time.monotonic() - started)

    def _reindex(self, index_type: str, started: float) -> RebuildResult:
        """Switch the vector index type, building the new one from the stored vectors first."""
        with self._writing():
            dimension = int(self.config["dimension"])
            n_docs, n = self.store.counts()
            new = VectorIndex.build(index_type, dimension, n, lambda: self.store.iter_vectors(dimension))
            with self._commit():
                self.store.set_info({"index_type": index_type})
                self._vectors = new
        return RebuildResult(documents=n_docs, passages=n, seconds=time.monotonic() - started)
