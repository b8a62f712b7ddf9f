"""Verify an index and repair what can be repaired without losing a stored document.

``check`` reads only: SQLite integrity, counts, the FAISS id mapping against
the passage rows, the FAISS file of the committed generation, the model
fingerprint, a sample of passages re-encoded and compared with their stored
vectors, and the encoder's fast path (dropped layers, lean pass, reduced
precision) against the slow fp32 reference on the probe texts (``reference``). ``repair`` opens a writer session (which takes the lock and
rewrites a missing or stray FAISS file), drops what an interrupted write left
behind, re-encodes documents that have no passages, and rewrites the FAISS
file from the stored vectors.

Both work on an index through its public pieces only (path, config, store,
generations, encoder, writer): ``CheckedIndex`` names them, so this module needs
nothing from ``indexer`` and ``Index.check``/``repair`` can import it freely.
"""

from __future__ import annotations

import random
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Protocol

import numpy as np

from ..errors import SemsearchError
from ..ingest.passages import document_spans
from ..model.precision import MIN_PROBE_COSINE
from ..model.reference import reference_min_cosine
from . import filter_check
from .check_whitening import check_transform
from .deltas import delta_files
from .whitened import index_dimension
from .generations import base_generation, chain_names, data_files, data_name, file_name, read_vectors, vector_files
from .seals import recorded

if TYPE_CHECKING:  # pragma: no cover
    from ..model.encoder import Encoder
    from .generations import Generations
    from .store import MetadataStore
    from .writer import Writer


class CheckedIndex(Protocol):
    """What ``check_index`` and ``repair_index`` use of an index (``index.indexer.Index`` is one)."""

    path: Path
    store: "MetadataStore"
    generations: "Generations"

    @property
    def config(self) -> Mapping[str, Any]: ...

    @property
    def encoder(self) -> "Encoder": ...

    def writer(self) -> AbstractContextManager["Writer"]: ...


@dataclass
class CheckReport:
    documents: int = 0
    passages: int = 0
    vectors: int = 0
    sampled: int = 0
    min_cosine: float | None = None
    reference_cosine: float | None = None  # the fast path against the fp32 reference, probe texts
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        return {"ok": self.ok, **asdict(self)}


@dataclass
class RepairReport:
    actions: list[str] = field(default_factory=list)


def check_index(index: CheckedIndex, sample: int = 20, tolerance: float = 1e-3, seed: int = 0) -> CheckReport:
    """Look for every way the index could disagree with itself; change nothing."""
    store = index.store
    report = CheckReport()
    result = store.integrity()
    if result != "ok":
        report.problems.append(f"the SQLite database {store.path} is damaged: {result}; restore a backup or rebuild")
        return report
    report.problems += filter_check.problems(store.conn)
    cfg = index.config
    report.documents, report.passages = store.counts()
    generation = store.generation()
    names = chain_names(base_generation(cfg, generation), generation)
    shown = names[0] if len(names) == 1 else f"{names[0]} and {len(names) - 1} delta file(s)"
    on_disk = None
    missing = [name for name in names if not (index.path / name).is_file()]
    if missing:
        report.problems.append(f"the vector files of generation {generation} are incomplete ({', '.join(missing[:3])} "
                               "missing); run `semsearch index repair`")
    else:
        try:
            on_disk = read_vectors(index.path, base_generation(cfg, generation), generation, recorded(cfg))
        except SemsearchError as exc:
            report.problems.append(str(exc))
    present = [*vector_files(index.path).values(), *data_files(index.path).values(),
               *delta_files(index.path).values()]
    stale = sorted(p.name for p in present if p.name not in {*names, data_name(base_generation(cfg, generation))})
    if stale:
        report.notes.append(f"leftover vector files of other generations: {', '.join(stale)}")
    if on_disk is not None:
        _check_vectors(on_disk, index, shown, index_dimension(cfg), report)
    problems, notes = check_transform(store, cfg, on_disk, sample)
    report.problems += problems
    report.notes += notes
    orphans = len(store.orphan_passage_ids())
    if orphans:
        report.problems.append(f"{orphans} passage(s) belong to no document; run `semsearch index repair`")
    bare = len(store.documents_without_passages())
    if bare:
        report.problems.append(f"{bare} document(s) have no passages and cannot be found; run `semsearch index repair`")
    if store.has_next_passages():
        report.notes.append("an interrupted rebuild left work behind (dropped by the next rebuild or repair)")
    if not cfg.get("complete", True):
        report.notes.append("the build of this index was interrupted; run the same `semsearch index build` again to finish it")
    try:
        encoder = index.encoder
    except SemsearchError as exc:
        report.problems.append(str(exc))
        return report
    _check_sample(index, encoder, sample, tolerance, seed, report)
    report.reference_cosine = reference_min_cosine(encoder)
    if report.reference_cosine < MIN_PROBE_COSINE:
        report.problems.append(
            f"the encoder's fast path ({encoder.precision}) gives vectors at cosine {report.reference_cosine:.4f} "
            "of the fp32 reference on the probe texts; rebuild with `semsearch index rebuild --precision fp32`")
    return report


def _check_vectors(on_disk, index: CheckedIndex, name: str, dimension: int, report: CheckReport) -> None:
    """The FAISS file against the stored passages: every row one vector, every vector a row."""
    stored = index.generations.stored_ids()
    on_disk.agrees_with(stored)  # lets a backend account for what it keeps by design (HNSW tombstones)
    rows = set(stored.load().tolist())
    report.vectors = on_disk.ntotal
    faiss_ids = set(on_disk.ids().tolist())
    if on_disk.dimension != dimension:
        report.problems.append(f"{name} holds {on_disk.dimension}-d vectors, the index records "
                               f"{dimension}-d; run `semsearch index repair`")
    missing, extra = rows - faiss_ids, faiss_ids - rows
    if missing:
        report.problems.append(f"{len(missing)} passage(s) have no vector in {name}; run `semsearch index repair`")
    if extra:
        report.problems.append(f"{name} has {len(extra)} vector(s) of deleted passages; run `semsearch index repair`")
    if on_disk.ntotal != len(faiss_ids):
        report.problems.append(f"{name} has repeated ids; run `semsearch index repair`")


def _check_sample(index: CheckedIndex, encoder, sample: int, tolerance: float, seed: int, report: CheckReport) -> None:
    """Re-encode a random sample of passages and compare with the stored vectors."""
    agreement = sample_agreement(index.store, int(index.config["passage_overlap"]), encoder, sample, seed)
    report.problems += agreement.problems
    if not agreement.sampled:
        return
    report.sampled, report.min_cosine = agreement.sampled, agreement.min_cosine
    bad = agreement.below(tolerance)
    if bad:
        report.problems.append(
            f"{bad} of {agreement.sampled} sampled passage vectors differ from a fresh encoding "
            f"(lowest cosine {report.min_cosine:.4f}); run `semsearch index rebuild`")


@dataclass
class Agreement:
    """Stored passage vectors against a fresh encoding of the same windows."""

    cosines: np.ndarray
    problems: list[str]  # passages whose text no longer gives the stored window

    @property
    def sampled(self) -> int:
        return len(self.cosines)

    @property
    def min_cosine(self) -> float | None:
        return float(self.cosines.min()) if len(self.cosines) else None

    def below(self, tolerance: float) -> int:
        return int((self.cosines < 1 - tolerance).sum())


def sample_agreement(store: "MetadataStore", overlap: int, encoder, sample: int, seed: int = 0) -> Agreement:
    """Re-encode ``sample`` passages (chosen with ``seed``) with ``encoder`` and compare each with
    its stored vector: the evidence that an encoder reproduces an index (``index check``, and
    ``Index.encoder_for`` when a recorded model fingerprint no longer matches)."""
    ids = store.passage_ids().tolist()
    chosen = sorted(random.Random(seed).sample(ids, min(sample, len(ids))))
    if not chosen:
        return Agreement(np.empty(0, np.float32), [])
    rows = store.passages(chosen)
    docs = store.documents(list({doc_id for doc_id, _ in rows.values()}))
    windows, stored, problems = [], [], []
    for pid in chosen:
        doc_id, passage = rows[pid]
        if doc_id not in docs:  # an orphan, reported by check
            continue
        spans = document_spans(encoder, docs[doc_id][0], overlap)
        if passage.order >= len(spans) or (spans[passage.order].start, spans[passage.order].end) != (passage.start, passage.end):
            problems.append(f"passage {pid} of document {doc_id!r} no longer matches its text; "
                            "run `semsearch index rebuild`")
            continue
        windows.append(spans[passage.order].token_ids)
        stored.append(pid)
    if not windows:
        return Agreement(np.empty(0, np.float32), problems)
    fresh = encoder.encode_ids(windows)
    vectors = store.vectors_of(stored, encoder.dimension)
    return Agreement((fresh * np.stack([vectors[pid] for pid in stored])).sum(axis=1), problems)


def repair_index(index: CheckedIndex) -> RepairReport:
    """Make the index consistent again from what SQLite holds; never deletes a document."""
    report = RepairReport()
    with index.writer() as writer:  # loads the vectors matching the store; rewrites a missing or stray file
        for name in writer.removed_leftovers:
            report.actions.append(f"removed the temporary file {name}")
        if writer.drop_interrupted_rebuild():
            report.actions.append("dropped the leftovers of an interrupted rebuild")
        orphans = writer.remove_orphan_passages()
        if orphans:
            report.actions.append(f"removed {orphans} passage(s) that belonged to no document")
        reencoded = writer.reencode_bare_documents()
        if reencoded:
            report.actions.append(f"re-encoded {reencoded} document(s) that had no passages")
        if filter_check.problems(index.store.conn):
            with index.store.transaction():
                values = filter_check.rebuild(index.store.conn)
            report.actions.append(f"rebuilt the metadata filter indexes ({values} values)")
        count = writer.rewrite_vectors()
        report.actions.append(f"rewrote {file_name(index.generations.generation)} from the {count} stored vectors")
    return report
