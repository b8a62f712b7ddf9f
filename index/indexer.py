"""``Index``: the public face of one index folder, composed of the pieces that do the work.

``Index.create`` fixes the configuration (model, layer, pooling, window) and
makes the folder (``folder.py``); ``open`` opens it. Writes (``add``,
``delete``, ``rebuild``) run in a writer session that holds the lock
(``writer.py``); reads run in a snapshot of one committed generation
(``snapshot.py``), whose vectors ``generations.py`` keeps in step with SQLite
(``store.py``). ``check`` and ``repair`` (``check.py``) use the same public
pieces.
"""

from __future__ import annotations

import os
from dataclasses import replace
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from . import options
from .ann import registry
from .errors import ConfigMismatchError, IndexExistsError, IndexNotFoundError, SemsearchError
from .ingest.engines import Engine
from .lexical import bm25
from .model.config import EncoderConfig, resolve_model
from .model.encoder import Encoder
from .records import AddResult, DeleteResult, IndexInfo, RebuildResult, recorded_runs
from .storage import folder, whitened
from .storage.check import CheckReport, RepairReport, check_index, repair_index
from .storage.generations import Generations, file_name
from .storage.lock import WriteLock
from .storage.migrations import SCHEMA_VERSION
from .storage.operations import Operations
from .storage.restamp import reverify
from .storage.snapshot import Snapshot
from .storage.store import MetadataStore
from .storage.writer import OnCommit, Progress, Writer, check_overlap

__all__ = ["Index", "IndexInfo", "AddResult", "DeleteResult", "RebuildResult"]

RESERVED_SETTINGS = frozenset({  # bulk_backend, query_backend, query_precision: the paths auto chose
    "model", "model_fingerprint", "layer", "pooling", "dimension", "max_length", "precision", "backend", "keep_hangul", "target_recall", "search_tuning", "vectors_base", "vectors_base_count", "vector_seals", "bm25_seal",
    "passage_tokens", "passage_overlap", "index_type", "generation", "next_passage_id", "complete", "created_at", "updated_at", "filter_epoch", whitened.SETTING, whitened.FIT, "bulk_backend", "query_backend", "query_precision"})


def check_target(target: float | None) -> float:
    """A recall target (None: the default), refused outside (0, 1]."""
    target = options.DEFAULT_TARGET_RECALL if target is None else float(target)
    if not 0 < target <= 1:
        raise SemsearchError(f"the target recall must be above 0 and at most 1 (got {target})")
    return target


class Index(Operations):
    """An index directory. Use :meth:`create`, :meth:`open` or :meth:`build`; reading back, backup and
    compaction come from ``Operations``."""

    def __init__(self, path: Path, store: MetadataStore, *, batch_size: int = options.DEFAULT_BATCH_SIZE,
                 device: str | None = None, wait: bool | float = False):
        self.path = Path(path)
        self.store = store
        self.batch_size = batch_size
        self.device = device
        self.wait = wait
        self.generations = Generations(store, self.path)
        self.lexical = bm25.LexicalIndexes(store, self.path)  # the optional BM25 index (hybrid retrieval)
        self._encoder: Encoder | None = None
        self._encoder_config: EncoderConfig | None = None

    # --- opening and creating -------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        model: str | os.PathLike | None = None,
        layer: int = options.DEFAULT_LAYER,
        pooling: str = options.DEFAULT_POOLING,
        *,
        max_length: int | None = None,
        passage_overlap: int | None = None,
        precision: str | None = None,
        backend: str | None = None,
        keep_hangul: bool | None = None,
        index_type: str = options.DEFAULT_INDEX_TYPE,
        target_recall: float | None = None,
        hybrid: bool = False,
        whitening: str | None = None,
        whitening_dims: int | None = None,
        batch_size: int = options.DEFAULT_BATCH_SIZE,
        device: str | None = None,
        force: bool = False,
        complete: bool = True,
    ) -> "Index":
        """A new, empty index at ``path`` (``model=None``: the embedded all-MiniLM-L6-v2).

        With ``force=True`` an existing index there is replaced by the new,
        empty one; ``build(force=True)`` instead fills the new index aside and
        swaps it in when complete. ``complete=False`` marks an index whose
        build is still going on (``build`` resumes such an index). ``hybrid=True`` records that
        the index keeps a BM25 index of its passages, updated with every write, and that searches
        fuse it with the vector ranking by default (``search.hybrid``; needs ``bm25s``). ``whitening``: see ``storage.whitened``.
        """
        path = Path(path)
        if hybrid:
            bm25.require()
        folder.recover(path)
        folder.check_destination(path, force)
        registry.resolve_type(index_type, 0)  # validates the name before anything is written
        whitening_config = whitened.configuration(whitening, whitening_dims)
        request = EncoderConfig.for_model(model, layer=layer, pooling=pooling, max_length=max_length,
                                          precision=precision, backend=backend, keep_hangul=keep_hangul)
        encoder = Encoder.for_config(request, batch_size=batch_size, device=device)
        if passage_overlap is None:
            passage_overlap = min(options.DEFAULT_PASSAGE_OVERLAP, encoder.window // 4)
        check_overlap(passage_overlap, encoder.window)
        # Made aside and renamed into place, so a crash never leaves a half-made index at `path`.
        with folder.staging(path, "creating") as staging:
            folder.make_marked(staging)
            store = MetadataStore.connect(staging, create=True)
            store.initialise({**encoder.describe(), "passage_tokens": encoder.window,
                              "passage_overlap": passage_overlap, "index_type": index_type, "complete": complete,
                              "target_recall": check_target(target_recall), whitened.SETTING: whitening_config,
                              **({bm25.SETTING: True} if hybrid else {})})
            store.close()
            registry.empty(encoder.dimension).save(staging / file_name(0))
            folder.put_in_place(staging, path)
        return cls.open(path, batch_size=batch_size, device=device)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        model: str | os.PathLike | None = None,
        *,
        batch_size: int = options.DEFAULT_BATCH_SIZE,
        device: str | None = None,
        wait: bool | float = False,
    ) -> "Index":
        """Open an existing index. ``model``, when given, must be the one the index records."""
        path = Path(path)
        folder.recover(path)
        if not folder.is_index(path):
            if (path / options.SHARD_MANIFEST).is_file():
                raise IndexNotFoundError(f"{path} is a sharded index: give one of its shards here "
                                         f"(e.g. --index {path / 'shard-0'}); query, eval, info, add and delete "
                                         "take the sharded folder itself")
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
        engine: Engine | None = None,
        wait: bool | float = False,
        **config: Any,
    ) -> tuple["Index", AddResult]:
        """Create an index at ``path`` and add ``documents``.

        Replacing an existing index (``force=True``) builds the new one aside
        and swaps it in only when it is complete, so a failed build loses
        nothing. A build that was interrupted (``complete`` is false) is
        resumed: stored unchanged documents are not encoded again. ``engine`` encodes them (``index.ingest.engines``).
        Replacing holds the old index's write lock from start to swap (waiting for a writer
        with ``wait``, else failing at once), so no write is acknowledged into the folder
        that is about to be deleted; writers that waited then see ``IndexReplacedError``.
        """
        path = Path(path)
        if folder.is_index(path) and not force:
            existing = cls.open(path)
            if existing.config.get("complete", True):
                raise IndexExistsError(f"an index already exists at {path}; pass --force to replace it")
            with existing.session(engine) as writer:
                result = writer.add(documents, progress, on_commit)
                writer.finish_build()
            return existing, result
        if folder.is_index(path):
            with WriteLock(path, wait=wait), folder.staging(path, "building") as staging:
                new = cls.create(staging, **config)
                folder.mark(staging)
                with new.session(engine) as writer:
                    result = writer.add(documents, progress, on_commit)
                    writer.finish_build()
                new.close()
                folder.replace_index(staging, path)
            return cls.open(path, batch_size=config.get("batch_size", options.DEFAULT_BATCH_SIZE)), result
        new = cls.create(path, complete=False, **config)
        with new.session(engine) as writer:
            result = writer.add(documents, progress, on_commit)
            writer.finish_build()
        return new, result

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> "Index":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- configuration and the encoder -------------------------------------------------------
    @property
    def config(self) -> dict[str, Any]:
        """Everything the index records (model, layer, pooling, sizes, generation, ...)."""
        return self.store.get_info()

    @property
    def encoder(self) -> Encoder:
        """The recorded model, loaded once per configuration; follows a rebuild committed by another process."""
        return self.encoder_for(self.config)

    def encoder_for(self, info: Mapping[str, Any]) -> Encoder:
        """The encoder of a recorded configuration; refuses a model whose vectors no longer match.

        A recorded fingerprint that differs from the loaded model's (an index recorded by an older
        fingerprint algorithm, moved to another environment) is not enough to refuse: a sample of
        stored passages is re-encoded and compared with their stored vectors. If they agree the
        model is the same and the index is re-stamped with the new fingerprint (at once when the
        write lock is free; otherwise a later open does it), else the model is refused
        (``index.storage.restamp``)."""
        recorded = EncoderConfig.from_info(info)
        if self._encoder is None or self._encoder_config != recorded:
            overlap, load = int(info.get("passage_overlap") or 0), self._load_encoder
            verified = False
            try:  # the recorded fingerprint as an expectation: a model that differs is not exported
                encoder = load(recorded)
            except ConfigMismatchError:
                if recorded.fingerprint is None:
                    raise
                # Check the vectors with the torch backend first (int8 exists on ONNX Runtime only),
                # so that a graph is exported only for a model that reproduces the index.
                probe = load(recorded.request() if recorded.precision == "int8" else
                             replace(recorded.request(), backend="torch"))
                recorded.check_dimension(probe.dimension, int(info["dimension"]), str(self.path))
                reverify(self.path, self.store, probe, recorded, overlap)
                encoder, verified = load(replace(recorded, fingerprint=probe.fingerprint)), True
            recorded.check_dimension(encoder.dimension, int(info["dimension"]), str(self.path))
            if not verified and not recorded.same_fingerprint(encoder.config):
                reverify(self.path, self.store, encoder, recorded, overlap)
            self._encoder, self._encoder_config = encoder, recorded
        return self._encoder

    def _load_encoder(self, config: EncoderConfig) -> Encoder:
        return Encoder.for_config(config, batch_size=self.batch_size, device=self.device)

    # --- reading -------------------------------------------------------------------------
    @contextmanager
    def snapshot(self) -> Iterator[Snapshot]:
        """One read snapshot of the committed state (see ``index.storage.snapshot``)."""
        with self.store.transaction(immediate=False):
            vectors = self.generations.current()
            yield Snapshot(self.store, vectors, self.generations.generation, self.store.get_info(), self.encoder_for)

    @property
    def vectors(self) -> registry.VectorIndex:
        """The vector index of the committed generation (reloaded when it changed)."""
        with self.snapshot() as snap:
            return snap.vectors

    def info(self) -> IndexInfo:
        with self.snapshot() as snap:
            cfg = snap.info
            docs, passages = self.store.counts()
            return IndexInfo(
                path=str(self.path), model=cfg["model"], model_fingerprint=cfg["model_fingerprint"],
                layer=cfg["layer"], pooling=cfg["pooling"], dimension=cfg["dimension"],
                max_length=cfg["max_length"], passage_tokens=cfg["passage_tokens"],
                passage_overlap=cfg["passage_overlap"], precision=cfg["precision"],
                backend=cfg.get("backend") or options.DEFAULT_BACKEND, keep_hangul=bool(cfg.get("keep_hangul", False)),
                target_recall=float(cfg.get("target_recall", options.DEFAULT_TARGET_RECALL)), search_tuning=cfg.get("search_tuning"),
                index_type=cfg.get("index_type", options.DEFAULT_INDEX_TYPE), vector_index=snap.vectors.describe(),
                schema_version=SCHEMA_VERSION, generation=snap.generation, documents=docs, passages=passages,
                vectors=snap.vectors.ntotal, complete=bool(cfg.get("complete", True)),
                created_at=cfg["created_at"], updated_at=cfg["updated_at"], hybrid=bool(cfg.get(bm25.SETTING, False)),
                bulk=recorded_runs(cfg)[0], query=recorded_runs(cfg)[1],
                whitening={**whitened.recorded(cfg), "fit": cfg.get(whitened.FIT)},
            )

    def tune(self, target_recall: float | None = None):
        """Tune the approximate index's search settings for recall@10 >= ``target_recall`` (None: as
        recorded, 0.95 by default) now, and record them; returns the ``Tuning`` (None when exact)."""
        with self.writer() as writer:
            if target_recall is not None:
                writer.record({"target_recall": check_target(target_recall)})
            return writer.tune(force=True)

    def check(self, sample: int = 20) -> CheckReport:
        """Verify counts, the FAISS id mapping, the model and a re-encoded sample (see ``index.storage.check``)."""
        return check_index(self, sample=sample)

    def repair(self) -> RepairReport:
        """Rewrite what can be rebuilt from SQLite (FAISS file, leftovers); loses no document."""
        return repair_index(self)

    def setting(self, key: str) -> Any:
        """A setting recorded with :meth:`set_setting` (None when absent)."""
        return self.config.get(key)

    def set_setting(self, key: str, value: Any) -> None:
        """Record a setting in the index (under the write lock); core configuration keys are refused."""
        if key in RESERVED_SETTINGS:
            raise SemsearchError(f"{key!r} is part of the index configuration; change it with `semsearch index rebuild`")
        with self.session() as writer:
            writer.record({key: value})

    # --- writing ---------------------------------------------------------------------------
    def writer(self, engine: Engine | None = None) -> Writer:
        """A write session (``with index.writer() as w: ...``): holds the lock until it ends.
        ``engine`` encodes what it adds (default: in this process; see ``index.ingest.engines``)."""
        return Writer(self.path, self.store, self.generations, lambda: self.encoder, wait=self.wait,
                      batch_size=self.batch_size, device=self.device, engine=engine)

    @contextmanager
    def session(self, engine: Engine | None = None) -> Iterator[Writer]:
        """A write session (see :meth:`writer`) that also keeps the optional BM25 index in step: when
        the index records ``hybrid``, the BM25 index of the committed generation is rebuilt from the
        stored passages after a successful session, under the lock, and older ones are removed."""
        if self.config.get(bm25.SETTING):
            bm25.require()  # before anything is written
        with self.writer(engine) as writer:
            yield writer
            self.lexical.refresh(bool(self.store.get_info().get(bm25.SETTING)))

    def add(self, documents: Iterable[Any], progress: Progress | None = None,
            on_commit: OnCommit | None = None, engine: Engine | None = None) -> AddResult:
        """Upsert documents (``{"id", "text", "metadata"}`` mappings or objects).

        Committed every ``options.COMMIT_EVERY`` documents; a document whose
        text is unchanged is not encoded again (only its metadata is updated).
        When an id repeats in the input, the last one wins and it is reported.
        ``on_commit`` is called with the ids of each chunk once it is durable.
        ``engine`` encodes them (default: in this process; see ``index.ingest.engines``).
        """
        with self.session(engine) as writer:
            return writer.add(documents, progress, on_commit)

    def delete(self, ids: Iterable[str]) -> DeleteResult:
        """Delete documents by id; ids that are not stored are reported as missing."""
        with self.session() as writer:
            return writer.delete(ids)

    def rebuild(
        self,
        model: str | os.PathLike | None = None,
        layer: int | None = None,
        pooling: str | None = None,
        *,
        max_length: int | None = None,
        passage_overlap: int | None = None,
        precision: str | None = None,
        backend: str | None = None,
        keep_hangul: bool | None = None,
        index_type: str | None = None,
        target_recall: float | None = None,
        whitening: str | None = None,
        whitening_dims: int | None = None,
        progress: Progress | None = None,
    ) -> RebuildResult:
        """Re-encode every stored text with a new configuration (unset values keep the recorded ones).

        Searches see the old index until the new one is complete. When only
        ``index_type`` changes, the stored vectors are re-indexed without
        encoding anything. ``target_recall`` changes the recall the search settings are tuned for.
        ``whitening``/``whitening_dims`` change the whitening (dims 0: all), refitted in every case.
        """
        if index_type is not None:
            registry.resolve_type(index_type, 0)  # validates the name
        if target_recall is not None:
            check_target(target_recall)
        if rewhiten := (whitening is not None or whitening_dims is not None):
            whitened.reconfigured(self.config, whitening, whitening_dims)  # validates before the lock
        no_encoding = all(
            v is None for v in (model, layer, pooling, max_length, passage_overlap, precision, backend, keep_hangul))
        with self.session() as writer:
            if target_recall is not None:
                writer.record({"target_recall": target_recall})
            if rewhiten:
                writer.configure_whitening(whitening, whitening_dims)
            if no_encoding and (index_type is not None or rewhiten):  # from the stored vectors, refitted
                return writer.reindex(index_type)
            request = EncoderConfig.from_info(self.config).merge(
                model=model, layer=layer, pooling=pooling, max_length=max_length, precision=precision,
                backend=backend, keep_hangul=keep_hangul)
            return writer.rebuild(request, passage_overlap=passage_overlap, index_type=index_type,
                                  progress=progress)
