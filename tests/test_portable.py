"""An index moves between environments: its model fingerprint names what determines the vectors.

The fingerprint leaves out where the model lies and how the installed transformers writes its
config; where a recorded fingerprint still differs (one recorded by the older algorithm, which
hashed the model's folder path), the index re-encodes a sample of its passages, compares them
with the stored vectors, and re-stamps itself when they agree. A model whose vectors differ is
refused as before.
"""

from __future__ import annotations

import json
import shutil

import pytest
from tiny_model import perturbed_copy

from index import ConfigMismatchError, Index
from index.model import config as config_module
from index.model.encoder import Encoder
from search import Searcher

DOCS = [{"id": f"d{i}", "text": text} for i, text in enumerate([
    "How do I reset my password?", "Where is my parcel?", "The bank of the river was muddy.",
    "Cancel my subscription please.", "Which payment cards do you accept?", "Opening hours on Sunday",
])]


@pytest.fixture
def embedded_at(monkeypatch):
    """Point the embedded default model at a folder of our choice (another venv's install path)."""
    def point(folder):
        monkeypatch.setattr(config_module, "embedded_model_path", lambda: folder)
        Encoder._cache.clear()  # a new process would load it again
    yield point
    Encoder._cache.clear()


def moved_copy(src, dst):
    """The same model files at another path, with the config rewritten as another transformers
    version would write it: other key order, another version, another recorded folder."""
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg.update({"transformers_version": "4.0.0", "_name_or_path": "/somewhere/else"})
    (dst / "config.json").write_text(json.dumps(dict(reversed(list(cfg.items()))), indent=1))
    return dst


def answers(path):
    searcher = Searcher(path)
    return [[(h.id, round(h.score, 5)) for h in searcher.search(q, k=3)] for q in ("forgot my login", "river bank")]


def test_an_index_opens_from_a_moved_model_with_another_config_layout(tiny_model, tmp_path, embedded_at):
    first = tmp_path / "venv-a" / "model"
    shutil.copytree(tiny_model, first)
    embedded_at(first)
    Index.build(tmp_path / "idx", DOCS)
    before, recorded = answers(tmp_path / "idx"), Index.open(tmp_path / "idx").config["model_fingerprint"]

    embedded_at(moved_copy(first, tmp_path / "venv-b" / "model"))
    assert answers(tmp_path / "idx") == before
    assert Index.open(tmp_path / "idx").config["model_fingerprint"] == recorded  # same fingerprint: nothing to do
    assert Index.open(tmp_path / "idx").check().ok


def test_an_index_recorded_by_the_old_fingerprint_is_verified_and_re_stamped(tiny_model, tmp_path, embedded_at):
    embedded_at(tiny_model)
    Index.build(tmp_path / "idx", DOCS)
    before = answers(tmp_path / "idx")
    new = Index.open(tmp_path / "idx").config["model_fingerprint"]
    with Index.open(tmp_path / "idx") as index, index.store.transaction():  # what the old algorithm recorded
        index.store.set_info({"model_fingerprint": "cb960186c2177abe",
                              "faq_calibration": {"threshold": 0.5, "model_fingerprint": "cb960186c2177abe"}})
    Encoder._cache.clear()
    assert answers(tmp_path / "idx") == before
    info = Index.open(tmp_path / "idx").config
    assert info["model_fingerprint"] == new  # re-stamped: the next open has nothing to verify
    assert info["faq_calibration"]["model_fingerprint"] == new  # settings that name the model follow


def test_re_stamping_waits_for_the_write_lock_and_reading_goes_on(tiny_model, tmp_path, embedded_at):
    embedded_at(tiny_model)
    Index.build(tmp_path / "idx", DOCS)
    before = answers(tmp_path / "idx")
    with Index.open(tmp_path / "idx") as index, index.store.transaction():
        index.store.set_info({"model_fingerprint": "cb960186c2177abe"})
    Encoder._cache.clear()
    with Index.open(tmp_path / "idx").writer():  # another writer holds the lock
        assert answers(tmp_path / "idx") == before
        assert Index.open(tmp_path / "idx").config["model_fingerprint"] == "cb960186c2177abe"
    Encoder._cache.clear()
    assert answers(tmp_path / "idx") == before  # the lock is free now: verified and re-stamped
    assert Index.open(tmp_path / "idx").config["model_fingerprint"] != "cb960186c2177abe"


def test_a_model_with_one_changed_weight_is_still_refused(tiny_model, tmp_path, embedded_at):
    first = tmp_path / "a"
    shutil.copytree(tiny_model, first)
    embedded_at(first)
    Index.build(tmp_path / "idx", DOCS)
    recorded = Index.open(tmp_path / "idx").config["model_fingerprint"]

    embedded_at(perturbed_copy(first, tmp_path / "changed"))
    with pytest.raises(ConfigMismatchError, match="no longer matches .*re-encoded passages at cosine"):
        Searcher(tmp_path / "idx").search("forgot my login")
    report = Index.open(tmp_path / "idx").check()
    assert any("no longer matches" in p for p in report.problems)
    assert Index.open(tmp_path / "idx").config["model_fingerprint"] == recorded  # nothing re-stamped
