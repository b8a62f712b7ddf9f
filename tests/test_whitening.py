"""Whitening: fitted at build, stored in the index, applied identically to FAISS and to every query.

Unit tests on the tiny random BERT (``--whitening on``: ``auto`` keeps an
unmeasured model raw); the 20-document test on the embedded model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from index import Index
from index.storage import whitened
from search import Searcher

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TEXTS = ["the cat sat on the mat", "stock markets fell sharply today", "how do I reset my password",
         "a recipe for tomato soup", "the train to Paris was late", "rain is expected tomorrow",
         "my laptop will not start", "the football match ended in a draw", "learning to play the violin",
         "the museum opens at nine", "cheap flights to Rome", "symptoms of the common cold"]


def docs(n: int = 12, offset: int = 0):
    return [{"id": f"d{i + offset}", "text": f"{TEXTS[i % len(TEXTS)]} {i + offset}"} for i in range(n)]


def raw_vector(index: Index, doc_id: str) -> np.ndarray:
    with index.snapshot() as snap:
        pid = index.store.passage_ids_of([doc_id])[0]
        return snap.store.vectors_of([pid], int(snap.info["dimension"]))[pid]


def test_whitened_build_and_query_use_the_same_transform(tiny_model, tmp_path):
    index, _ = Index.build(tmp_path / "ix", docs(), model=tiny_model, whitening="on")
    fit = index.config[whitened.FIT]
    assert fit["whiten"] and fit["vectors"] == 12 and fit["background"] == 1000 and fit["sha256"]
    info = index.info()
    assert info.whitening["mode"] == "on" and info.whitening["fit"]["dimension"] == 32
    with index.snapshot() as snap:
        transform = snap.whitening
        assert transform is not None and snap.vectors.dimension == 32
    # SQLite keeps the method's raw vectors: re-encoding gives them back.
    raw = raw_vector(index, "d3")
    assert np.allclose(raw, index.encoder.encode([docs()[3]["text"]])[0], atol=1e-5)
    # The query path whitens the raw query vector with the same transform as the FAISS vectors.
    hits = Searcher(index).search(docs()[3]["text"], k=3)
    assert hits[0].id == "d3" and hits[0].score == pytest.approx(1.0, abs=1e-4)
    query = transform.apply(index.encoder.encode(["a recipe"])[0])
    expected = {d["id"]: float(transform.apply(raw_vector(index, d["id"])) @ query) for d in docs()}
    for hit in Searcher(index).search("a recipe", k=5):
        assert hit.score == pytest.approx(expected[hit.id], abs=1e-4)
    assert index.check().ok


def test_off_and_auto_on_an_unmeasured_model_are_the_raw_vectors(tiny_model, tmp_path):
    for mode in ("off", None):
        index, _ = Index.build(tmp_path / f"ix-{mode}", docs(), model=tiny_model,
                               **({"whitening": mode} if mode else {}))
        fit = index.config[whitened.FIT]
        assert not fit["whiten"] and "sha256" not in fit
        assert ("not measured" in fit["reason"]) if mode is None else fit["reason"].startswith("off")
        query = index.encoder.encode(["a recipe"])[0]
        for hit in Searcher(index).search("a recipe", k=5):
            assert hit.score == pytest.approx(float(raw_vector(index, hit.id) @ query), abs=1e-5)


def test_rebuild_refits_without_encoding_and_dims_shrink_the_vectors(tiny_model, tmp_path, monkeypatch):
    index, _ = Index.build(tmp_path / "ix", docs(), model=tiny_model, whitening="on")
    before = index.config[whitened.FIT]["sha256"]
    raw = raw_vector(index, "d5")
    from index.model.encoder import Encoder

    calls = []
    original = Encoder.encode_ids
    monkeypatch.setattr(Encoder, "encode_ids", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    index.rebuild(whitening_dims=8)
    assert not calls  # the stored vectors were re-used: only the transform changed
    fit = index.config[whitened.FIT]
    assert fit["dims"] == 8 and fit["dimension"] == 8 and fit["sha256"] != before
    assert index.vectors.dimension == 8 and np.array_equal(raw_vector(index, "d5"), raw)
    assert Searcher(index).search(docs()[5]["text"], k=1)[0].id == "d5"
    assert index.check().ok
    index.rebuild(whitening="off")
    assert index.vectors.dimension == 32 and "sha256" not in index.config[whitened.FIT]
    assert index.check().ok


def test_a_rebuild_that_re_encodes_refits(tiny_model, tmp_path):
    index, _ = Index.build(tmp_path / "ix", docs(), model=tiny_model, whitening="on")
    before = index.config[whitened.FIT]["sha256"]
    index.rebuild(layer=-1)
    fit = index.config[whitened.FIT]
    assert fit["sha256"] != before and fit["layer"] == -1
    assert Searcher(index).search(docs()[7]["text"], k=1)[0].id == "d7"
    assert index.check().ok


def test_refit_when_the_index_has_doubled(tiny_model, tmp_path):
    index, _ = Index.build(tmp_path / "ix", docs(6), model=tiny_model, whitening="on")
    first = index.config[whitened.FIT]
    index.add(docs(3, offset=100))  # 9 < 2 x 6: the fit stays
    assert index.config[whitened.FIT]["sha256"] == first["sha256"]
    assert Searcher(index).search(docs(3, offset=100)[1]["text"], k=1)[0].id == "d101"
    index.add(docs(6, offset=200))  # 15 >= 12: refitted on every passage
    fit = index.config[whitened.FIT]
    assert fit["sha256"] != first["sha256"] and fit["passages"] == fit["vectors"] == 15
    assert index.check().ok


def test_check_finds_a_damaged_or_foreign_transform(tiny_model, tmp_path):
    index, _ = Index.build(tmp_path / "ix", docs(), model=tiny_model, whitening="on")
    other, _ = Index.build(tmp_path / "other", docs(12, offset=50), model=tiny_model, whitening="on")
    with index.store.transaction():  # another index's transform: shapes fine, sha256 not the recorded one
        index.store.set_blob(whitened.BLOB, other.store.get_blob(whitened.BLOB))
    report = Index.open(tmp_path / "ix").check()
    assert not report.ok and any("not the one recorded" in p for p in report.problems)
    with index.store.transaction():
        index.store.set_blob(whitened.BLOB, b"not an npz file")
    report = Index.open(tmp_path / "ix").check()
    assert not report.ok and any("damaged" in p for p in report.problems)


def test_check_finds_faiss_vectors_not_made_by_the_transform(tiny_model, tmp_path):
    index, _ = Index.build(tmp_path / "ix", docs(), model=tiny_model, whitening="on")
    with index.writer() as writer:  # FAISS rewritten raw while a transform stays recorded
        from index.ann import registry

        dimension = int(index.config["dimension"])
        with writer.generations.commit() as commit:
            commit.replace(registry.build("flat", dimension, 12, lambda: index.store.iter_vectors(dimension)))
    report = Index.open(tmp_path / "ix").check()
    assert not report.ok, report.problems


@pytest.mark.integration
def test_twenty_documents_are_not_worse_than_raw(tmp_path):
    """The examples' 20 FAQ questions and their labelled rewordings, embedded model, layer -2 (where
    ``auto`` whitens): every whitening tried ranked them worse than raw (docs/quality.md), so ``auto``
    keeps an index this small raw, says why, and ranks exactly as raw; from 100 passages it fits."""
    faq = [json.loads(line) for line in (EXAMPLES / "faq.jsonl").read_text(encoding="utf-8").splitlines()]
    labelled = [json.loads(line) for line in
                (EXAMPLES / "faq-labelled.jsonl").read_text(encoding="utf-8").splitlines()]
    labelled = [q for q in labelled if q.get("faq_id")]
    corpus = [{"id": d["_id"], "text": d["text"]} for d in faq]

    def mrr(index) -> float:
        hits = Searcher(index).search_many([q["question"] for q in labelled], k=10)
        ranks = [next((r for r, h in enumerate(found, 1) if h.id == q["faq_id"]), None)
                 for q, found in zip(labelled, hits)]
        return float(np.mean([1 / r if r else 0 for r in ranks]))

    raw, _ = Index.build(tmp_path / "off", corpus, whitening="off")
    auto, _ = Index.build(tmp_path / "auto", corpus)
    fit = auto.config[whitened.FIT]
    assert not fit["whiten"] and "too few" in fit["reason"]
    assert mrr(auto) >= mrr(raw) - 0.005 and mrr(auto) == pytest.approx(mrr(raw), abs=1e-9)
    more = [{"id": f"x{i}-{d['_id']}", "text": f"{d['text']} (copy {i})"} for i in range(5) for d in faq]  # 120 passages
    auto.add(more)
    assert auto.config[whitened.FIT]["whiten"] and auto.config[whitened.FIT]["vectors"] == 120


def test_a_build_ends_with_a_fit_on_every_passage(tiny_model, tmp_path, monkeypatch):
    from index import options

    monkeypatch.setattr(options, "COMMIT_EVERY", 4)  # fitted at the first commit (4 passages), then 8
    index, _ = Index.build(tmp_path / "ix", docs(10), model=tiny_model, whitening="on")
    fit = index.config[whitened.FIT]
    assert fit["passages"] == fit["vectors"] == 10  # the fit of the first chunks was replaced at the end
    assert index.check().ok
    query = index.encoder.encode([docs(10)[3]["text"]])
    with index.snapshot() as snap:
        scores = (snap.whiten(query) @ snap.whiten(np.stack([raw_vector(index, f"d{i}") for i in range(10)])).T)[0]
    hits = Searcher(index).search(docs(10)[3]["text"], k=10)
    assert [h.score for h in hits] == pytest.approx(sorted(scores.tolist(), reverse=True), abs=1e-5)
