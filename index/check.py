"""Verify an index and repair what can be repaired without losing a stored document.

``check`` reads only: SQLite integrity, counts, the FAISS id mapping against
the passage rows, the FAISS file of the committed generation, the model
fingerprint, and a sample of passages re-encoded and compared with their
stored vectors. ``repair`` takes the write lock, drops what an interrupted
write left behind, re-encodes documents that have no passages, and rewrites
the FAISS file from the stored vectors.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field

import numpy as np

from .errors import SemsearchError
from .indexer import Index
from .passages import split_passages
from .vectors import VectorIndex, vector_files


@dataclass
class CheckReport:
    documents: int = 0
    passages: int = 0
    vectors: int = 0
    sampled: int = 0
    min_cosine: float | None = None
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


def check_index(index: Index, sample: int = 20, tolerance: float = 1e-3, seed: int = 0) -> CheckReport:
    """Look for every way the index could disagree with itself; change nothing."""
    store = index.store
    report = CheckReport()
    result = store.conn.execute("PRAGMA quick_check").fetchone()[0]
    if result != "ok":
        report.problems.append(f"the SQLite database {store.path} is damaged: {result}; restore a backup or rebuild")
        return report
    cfg = index.config
    report.documents, report.passages = store.counts()
    generation = store.generation()
    path = index.path / f"vectors-{generation}.faiss"
    on_disk = None
    if not path.is_file():
        report.problems.append(f"the FAISS file for generation {generation} ({path.name}) is missing; "
                               "run `semsearch index repair`")
    else:
        try:
            on_disk = VectorIndex.load(path)
        except SemsearchError as exc:
            report.problems.append(str(exc))
    stale = sorted(p.name for g, p in vector_files(index.path).items() if g != generation)
    if stale:
        report.notes.append(f"leftover FAISS files of other generations: {', '.join(stale)}")
    rows = {int(i) for ids, _ in store.iter_vectors(cfg["dimension"]) for i in ids}
    if on_disk is not None:
        if on_disk.kind == "hnsw":  # deleted passages stay in an HNSW file as tombstones
            on_disk.deleted = set(on_disk.all_ids().tolist()) - rows
        report.vectors = on_disk.ntotal
        faiss_ids = set(on_disk.ids().tolist())
        if on_disk.dimension != cfg["dimension"]:
            report.problems.append(f"{path.name} holds {on_disk.dimension}-d vectors, the index records "
                                   f"{cfg['dimension']}-d; run `semsearch index repair`")
        missing, extra = rows - faiss_ids, faiss_ids - rows
        if missing:
            report.problems.append(f"{len(missing)} passage(s) have no vector in {path.name}; run `semsearch index repair`")
        if extra:
            report.problems.append(f"{path.name} has {len(extra)} vector(s) of deleted passages; run `semsearch index repair`")
        if on_disk.ntotal != len(faiss_ids):
            report.problems.append(f"{path.name} has repeated ids; run `semsearch index repair`")
    orphans = store.conn.execute(
        "SELECT count(*) FROM passages WHERE document_id NOT IN (SELECT id FROM documents)").fetchone()[0]
    if orphans:
        report.problems.append(f"{orphans} passage(s) belong to no document; run `semsearch index repair`")
    bare = store.conn.execute(
        "SELECT count(*) FROM documents WHERE id NOT IN (SELECT document_id FROM passages)").fetchone()[0]
    if bare:
        report.problems.append(f"{bare} document(s) have no passages and cannot be found; run `semsearch index repair`")
    if "passages_next" in store.db.table_names():
        report.notes.append("an interrupted rebuild left work behind (dropped by the next rebuild or repair)")
    if not cfg.get("complete", True):
        report.notes.append("the build of this index was interrupted; run the same `semsearch index build` again to finish it")
    try:
        encoder = index.encoder
    except SemsearchError as exc:
        report.problems.append(str(exc))
        return report
    _check_sample(index, encoder, sample, tolerance, seed, report)
    return report


def _check_sample(index: Index, encoder, sample: int, tolerance: float, seed: int, report: CheckReport) -> None:
    """Re-encode a random sample of passages and compare with the stored vectors."""
    store = index.store
    ids = [r[0] for r in store.conn.execute("SELECT id FROM passages ORDER BY id")]
    chosen = sorted(random.Random(seed).sample(ids, min(sample, len(ids))))
    if not chosen:
        return
    rows = store.passages(chosen)
    docs = store.documents(list({r.document_id for r in rows.values()}))
    overlap = int(index.config["passage_overlap"])
    windows, stored = [], []
    for pid in chosen:
        row = rows[pid]
        if row.document_id not in docs:  # an orphan, reported above
            continue
        text = docs[row.document_id][0]
        (tok,) = encoder.tokenize([text])
        spans = split_passages(tok.ids, tok.offsets, len(text), encoder.window, overlap)
        if row.order >= len(spans) or (spans[row.order].start, spans[row.order].end) != (row.start, row.end):
            report.problems.append(f"passage {pid} of document {row.document_id!r} no longer matches its text; "
                                   "run `semsearch index rebuild`")
            continue
        windows.append(spans[row.order].token_ids)
        stored.append(pid)
    if not windows:
        return
    fresh = encoder.encode_ids(windows)
    vectors = store.vectors_of(stored, encoder.dimension)
    cosines = (fresh * np.stack([vectors[pid] for pid in stored])).sum(axis=1)
    report.sampled = len(windows)
    report.min_cosine = float(cosines.min())
    bad = int((cosines < 1 - tolerance).sum())
    if bad:
        report.problems.append(
            f"{bad} of {len(windows)} sampled passage vectors differ from a fresh encoding "
            f"(lowest cosine {report.min_cosine:.4f}); run `semsearch index rebuild`")


def repair_index(index: Index) -> RepairReport:
    """Make the index consistent again from what SQLite holds; never deletes a document."""
    report = RepairReport()
    store = index.store
    with index._writing():  # loads the vectors matching the store and rewrites a missing or stray FAISS file
        if "passages_next" in store.db.table_names():
            store.drop_next_passages()
            report.actions.append("dropped the leftovers of an interrupted rebuild")
        orphan_ids = [r[0] for r in store.conn.execute(
            "SELECT id FROM passages WHERE document_id NOT IN (SELECT id FROM documents)")]
        if orphan_ids:
            with index._commit():
                store.conn.executemany("DELETE FROM passages WHERE id = ?", [(i,) for i in orphan_ids])
                index._vectors.remove(orphan_ids)
            report.actions.append(f"removed {len(orphan_ids)} passage(s) that belonged to no document")
        bare = [r[0] for r in store.conn.execute(
            "SELECT id, text FROM documents WHERE id NOT IN (SELECT document_id FROM passages)")]
        if bare:
            docs = store.documents(bare)
            # Their content hash is stored, so force re-encoding by clearing it first.
            with store.transaction():
                store.conn.executemany("UPDATE documents SET content_hash = '' WHERE id = ?", [(d,) for d in bare])
            result = index._add(({"id": d, "text": t, "metadata": m} for d, (t, m) in docs.items()), None)
            report.actions.append(f"re-encoded {result.added + result.updated} document(s) that had no passages")
        index._load_vectors()
        expected = {int(i) for ids, _ in store.iter_vectors(int(index.config["dimension"])) for i in ids}
        if set(index.vectors.ids().tolist()) != expected:  # pragma: no cover - _load_vectors guarantees it
            raise SemsearchError("could not make the FAISS index agree with the stored passages")
        index._save_vectors(index._vectors_generation)
        for leftover in index.path.glob(".vectors-*.tmp-*"):
            leftover.unlink(missing_ok=True)
            report.actions.append(f"removed the temporary file {leftover.name}")
        report.actions.append(f"rewrote vectors-{index._vectors_generation}.faiss from the {len(expected)} stored vectors")
    return report
