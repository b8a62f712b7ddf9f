"""A new vector backend is one file plus a registration line: proved with ``tests/sq8_backend.py``."""

from __future__ import annotations

import pytest

from index import Index, options
from index.ann.registry import load
from index.storage.generations import vector_files
from search import Searcher

DOCS = [{"id": f"d{i}", "text": f"the fox number {i} jumps over the dog {i % 7}", "metadata": {"g": i % 3}}
        for i in range(400)]


@pytest.fixture
def sq8_registered(monkeypatch):
    backends = {**options.VECTOR_BACKENDS, "sq8": "sq8_backend:SQ8Index"}  # the registration line
    monkeypatch.setattr(options, "VECTOR_BACKENDS", backends)
    monkeypatch.setattr(options, "INDEX_TYPES", (*backends, options.AUTO_INDEX_TYPE))


def test_a_registered_backend_serves_the_whole_index_lifecycle(sq8_registered, tiny_model, tmp_path):
    path = tmp_path / "idx"
    Index.create(path, model=tiny_model, index_type="sq8").add(DOCS)
    index = Index.open(path)
    assert index.vectors.kind == "sq8" and index.info().vector_index == "sq8"
    (file,) = vector_files(path).values()
    assert load(file).kind == "sq8"  # recognised on load by its own `owns`
    searcher = Searcher(path)
    for doc in DOCS[:20]:
        hit = searcher.search(doc["text"], k=1)[0]
        assert hit.id == doc["id"] and hit.score == pytest.approx(1.0, abs=1e-4)  # re-ranked: exact scores
    assert {h.metadata["g"] for h in searcher.search("fox", k=5, where={"g": 1})} == {1}
    index.delete(["d1", "d2"])
    index.add([{"id": "d3", "text": "hello world"}])
    assert not {"d1", "d2"} & {h.id for h in Searcher(path).search(DOCS[1]["text"], k=10)}
    assert Index.open(path).check(sample=10).ok
    Index.open(path).rebuild(index_type="flat")  # and switched away from without re-encoding
    assert Index.open(path).vectors.kind == "flat"


def test_an_unregistered_type_is_refused(tiny_model, tmp_path):
    from index.errors import SemsearchError

    with pytest.raises(SemsearchError, match="unknown index type 'sq8'"):
        Index.create(tmp_path / "x", model=tiny_model, index_type="sq8")
