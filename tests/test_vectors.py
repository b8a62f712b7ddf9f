"""Every FAISS index type on synthetic unit vectors, and through the indexer."""

from __future__ import annotations

import numpy as np
import pytest

import index.ann.registry as vectors_module
from index import Index
from index.ann.registry import build, load, resolve_type
from index.errors import SemsearchError
from index.storage.generations import vector_files
from search import Searcher

D = 32
N = 12_000


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((60, D)).astype(np.float32)
    x = centers[rng.integers(0, 60, N)] + 0.3 * rng.standard_normal((N, D)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = np.arange(5, 5 + N, dtype=np.int64) * 3  # ids are not positions
    queries = x[:40] + 0.05 * rng.standard_normal((40, D)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return ids, x, queries


def batches_of(ids, x):
    return lambda: ((ids[i : i + 2000], x[i : i + 2000]) for i in range(0, len(ids), 2000))


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf", "ivfpq", "ivf-disk"])
def test_each_type_agrees_with_exact_search_and_respects_deletes(data, kind, tmp_path):
    ids, x, queries = data
    exact = build("flat", D, N, batches_of(ids, x))
    vi = build(kind, D, N, batches_of(ids, x))
    assert vi.kind == kind and vi.ntotal == N
    _, want = exact.search(queries, 10)
    _, got = vi.search(queries, 50 if kind == "ivfpq" else 10)
    if kind == "ivfpq":  # compressed scores: the true top hit is among the candidates the searcher re-ranks
        assert np.mean([w in row for w, row in zip(want[:, 0], got)]) >= 0.95
    else:
        assert (got[:, 0] == want[:, 0]).mean() >= 0.95  # same top hit
    if kind != "ivfpq":
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, want)])
        assert recall >= 0.95, recall
    gone = want[:, 0][:10]
    assert vi.remove(gone) == len(set(gone.tolist()))
    _, after = vi.search(queries, 10)
    assert not np.isin(after, gone).any()
    assert vi.ntotal == N - len(set(gone.tolist()))
    vi.save(tmp_path / "vectors-7.faiss")
    back = load(tmp_path / "vectors-7.faiss")
    assert back.kind == kind and back.dimension == D


def test_filtered_search_on_every_type(data):
    ids, x, queries = data
    allowed = ids[::7]
    for kind in ("flat", "hnsw", "ivf", "ivf-disk"):
        vi = build(kind, D, N, batches_of(ids, x))
        _, got = vi.search(queries[:5], 10, allowed=allowed)
        assert np.isin(got[got >= 0], allowed).all() and (got >= 0).sum() >= 40


def test_auto_follows_size():
    assert resolve_type("auto", 500) == "flat"
    assert resolve_type("auto", 50_000) == "ivf"
    assert resolve_type("auto", 3_000_000) == "ivfpq"
    assert resolve_type("ivfpq", 100) == "flat"  # not enough vectors to train on yet
    with pytest.raises(SemsearchError, match="unknown index type"):
        resolve_type("lsh", 10)


DOCS = [{"id": f"d{i}", "text": f"the fox number {i} jumps over the dog {i % 7}", "metadata": {"g": i % 3}}
        for i in range(700)]


@pytest.mark.parametrize("kind", ["hnsw", "ivf", "auto"])
def test_indexer_with_approximate_types(kind, tiny_model, tmp_path, monkeypatch):
    monkeypatch.setattr(vectors_module, "FLAT_BELOW", 100)
    path = tmp_path / kind
    Index.create(path, model=tiny_model, index_type=kind).add(DOCS)
    index = Index.open(path)
    assert index.vectors.kind == ("ivf" if kind == "auto" else kind)
    searcher = Searcher(path)
    for doc in DOCS[:20]:
        assert searcher.search(doc["text"], k=1)[0].id == doc["id"]
    index.delete(["d1", "d2"])
    index.add([{"id": "d3", "text": "hello world"}])  # an upsert: the old d3 vector must vanish
    reopened = Index.open(path)
    assert reopened.check(sample=5).ok
    hits = Searcher(path).search(DOCS[3]["text"], k=10)
    assert not {"d1", "d2"} & {h.id for h in hits}
    assert all(h.text != DOCS[3]["text"] for h in hits)
    assert [h.metadata["g"] for h in Searcher(path).search("fox", k=5, where={"g": 2})] == [2] * 5


def test_rebuild_switches_type_without_reencoding(tiny_model, tmp_path, monkeypatch):
    from index.model.encoder import Encoder

    path = tmp_path / "idx"
    Index.create(path, model=tiny_model).add(DOCS)
    before = [h.id for h in Searcher(path).search(DOCS[9]["text"], k=3)]
    calls = []
    monkeypatch.setattr(Encoder, "encode_ids", lambda *a, **k: calls.append(1))
    Index.open(path).rebuild(index_type="hnsw")
    assert calls == [] and Index.open(path).config["index_type"] == "hnsw"
    assert Index.open(path).vectors.kind == "hnsw" and len(vector_files(path)) == 1
    reopened = Index.open(path)
    pid = reopened.store.passage_ids_of(["d9"])[0]
    vector = reopened.store.vectors_of([pid], 32)[pid]
    after = Searcher(path).search_vectors(vector[None, :], k=3)[0]
    assert before[0] == after[0].id == "d9" and after[0].score == pytest.approx(1.0, abs=1e-4)


def test_hnsw_tombstones_survive_reopen_and_compact(tiny_model, tmp_path):
    path = tmp_path / "h"
    Index.create(path, model=tiny_model, index_type="hnsw").add(DOCS[:100])
    Index.open(path).delete([f"d{i}" for i in range(10)])
    reopened = Index.open(path)
    assert reopened.vectors.ntotal == 90 and len(reopened.vectors.deleted) == 10
    assert reopened.check(sample=3).ok
    reopened.delete([f"d{i}" for i in range(10, 40)])  # over a quarter deleted: compacted
    again = Index.open(path)
    assert again.vectors.deleted == set() and again.vectors.ntotal == 60
