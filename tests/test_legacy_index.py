"""Indexes written before the architecture split open and answer exactly as they did.

``tests/fixtures/legacy`` holds a flat and an hnsw index written by the code of
commit 98e1705 (``tests/fixtures/make_legacy_index.py``), with that code's
``index info`` and top-5 answers. Copies are opened with the current code.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from index import Index
from index.storage.migrations import SCHEMA_VERSION
from search import Searcher

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "legacy"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text(encoding="utf-8"))

pytestmark = pytest.mark.integration


@pytest.fixture(params=sorted(EXPECTED["indexes"]))
def legacy(request, tmp_path):
    kind = request.param
    path = tmp_path / kind
    shutil.copytree(FIXTURE / kind, path)
    return kind, path, EXPECTED["indexes"][kind]


def test_legacy_index_info_is_unchanged(legacy):
    kind, path, expected = legacy
    # The fixture records the fingerprint of the old algorithm (which hashed the model's folder
    # and transformers' config serialisation): the current code cannot reproduce it, so opening
    # re-encodes a sample of the stored passages, finds them equal to the stored vectors, and
    # re-stamps the index with the current fingerprint.
    assert expected["info"]["model_fingerprint"] == "e7621f82d35b7f5a"
    with Index.open(path) as index:
        assert index.config["model_fingerprint"] == "e7621f82d35b7f5a"
        index.encoder  # what every query loads first
    info = Index.open(path).info().as_dict()
    assert Index.open(path).config["model_fingerprint"] == info["model_fingerprint"] != "e7621f82d35b7f5a"
    # Every other field that code reported is unchanged; fields added since then have their defaults.
    # The schema moved on: opening applied the later migrations (m002: the filter indexes).
    moved = ("model_fingerprint", "schema_version")
    assert expected["info"]["schema_version"] == 1 and info["schema_version"] == SCHEMA_VERSION >= 2
    assert {key: info[key] for key in expected["info"] if key not in moved} == {
        key: value for key, value in expected["info"].items() if key not in moved}
    assert info["backend"] == "auto"  # added with the ONNX Runtime backend: the faster one per machine


def test_legacy_index_answers_identically(legacy):
    kind, path, expected = legacy
    searcher = Searcher(path)
    for query, want in zip(EXPECTED["queries"], expected["answers"]):
        got = searcher.search(query, k=5)
        assert [h.id for h in got] == [w["id"] for w in want], query
        for hit, w in zip(got, want):
            assert hit.score == pytest.approx(w["score"], abs=1e-5), (query, hit.id)
            assert [hit.passage.order, hit.passage.start, hit.passage.end] == w["passage"]
    filtered = [h.id for h in searcher.search("account", k=5, where={"topic": "account"})]
    assert filtered == expected["account_filter"]


def test_legacy_index_checks_ok_and_takes_writes(legacy):
    kind, path, expected = legacy
    index = Index.open(path)
    assert index.check(sample=50).ok
    index.add([{"id": "new", "text": "Can the shop ship my parcel to a locker?", "metadata": {"topic": "billing"}}])
    index.delete(["faq1"])
    hits = Searcher(path).search("Can the shop ship my parcel to a locker?", k=3)
    assert hits[0].id == "new" and hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert "faq1" not in {h.id for h in Searcher(path).search("reset my password", k=10)}
    with Index.open(path) as after:  # every stored passage has exactly one vector
        assert set(after.vectors.ids().tolist()) == set(after.store.passage_ids().tolist())
