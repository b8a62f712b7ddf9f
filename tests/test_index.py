"""Indexer, store and searcher behaviour on the tiny random BERT."""

from __future__ import annotations

import numpy as np
import pytest

import index.options as options_module
from index import Index
from index.errors import ConfigMismatchError, IndexExistsError, IndexLockedError, IndexNotFoundError, SemsearchError
from index.model.encoder import Encoder
from index.storage.generations import vector_files
from index.storage.lock import WriteLock
from search import Searcher

DOCS = [
    {"id": "pw", "text": "how do i reset my password", "metadata": {"lang": "en", "topic": "account"}},
    {"id": "bank", "text": "the bank of the river", "metadata": {"lang": "en", "topic": "nature"}},
    {"id": "boat", "text": "배를 타고 바다로 갔다", "metadata": {"lang": "ko", "topic": "nature"}},
    {"id": "pear", "text": "배를 먹었다", "metadata": {"lang": "ko", "topic": "food", "year": 2020}},
    {"id": "fox", "text": "the quick brown fox jumps over the lazy dog", "metadata": {"lang": "en"}},
]
LONG = " ".join(f"number {i} the quick brown fox" for i in range(60))  # several 62-token windows


@pytest.fixture
def idx(tiny_model, tmp_path):
    index = Index.create(tmp_path / "idx", model=tiny_model)
    index.add(DOCS)
    return index


def consistent(index: Index) -> None:
    """Every passage row has exactly one vector and every vector a row."""
    rows = {int(i) for ids, _ in index.store.iter_vectors(index.config["dimension"]) for i in ids}
    faiss_ids = set(index.vectors.ids().tolist())
    assert rows == faiss_ids
    assert index.vectors.ntotal == index.store.counts()[1] == len(rows)


def test_each_document_finds_itself_first(idx, tmp_path):
    consistent(idx)
    searcher = Searcher(tmp_path / "idx")
    for doc in DOCS:
        hit = searcher.search(doc["text"], k=3)[0]
        assert hit.id == doc["id"]
        assert hit.score == pytest.approx(1.0, abs=1e-4)
        assert hit.text == doc["text"] and hit.metadata == doc["metadata"]


def test_reopen_keeps_everything(idx, tmp_path, tiny_model):
    before = Searcher(idx).search("the bank of the river", k=5)
    idx.close()
    reopened = Index.open(tmp_path / "idx")
    info = reopened.info()
    assert (info.documents, info.passages, info.vectors) == (5, 5, 5)
    assert info.layer == -2 and info.pooling == "mean" and info.dimension == 32
    after = Searcher(reopened).search("the bank of the river", k=5)
    assert [(h.id, round(h.score, 5)) for h in before] == [(h.id, round(h.score, 5)) for h in after]


def test_upsert_replaces_text_and_vectors(idx, tmp_path):
    old_ids = set(idx.vectors.ids().tolist())
    result = idx.add([{"id": "pw", "text": "where do i find my invoice", "metadata": {"lang": "en"}}])
    assert (result.added, result.updated, result.unchanged) == (0, 1, 0)
    consistent(idx)
    assert idx.store.counts() == (5, 5)
    assert set(idx.vectors.ids().tolist()) != old_ids  # the old passage's vector is gone
    hits = Searcher(tmp_path / "idx").search("where do i find my invoice", k=1)
    assert hits[0].id == "pw" and hits[0].text == "where do i find my invoice"
    assert hits[0].metadata == {"lang": "en"}


def test_unchanged_documents_are_not_reencoded(idx, monkeypatch):
    calls = []
    original = Encoder.encode_ids

    def spy(self, token_ids, progress=None):
        calls.append(len(token_ids))
        return original(self, token_ids, progress)

    monkeypatch.setattr(Encoder, "encode_ids", spy)
    result = idx.add(DOCS)
    assert result.unchanged == 5 and result.added == result.updated == 0
    assert sum(calls) == 0
    changed_meta = [dict(DOCS[0], metadata={"lang": "fr"})]
    result = idx.add(changed_meta)
    assert result.metadata_updated == 1 and sum(calls) == 0
    assert idx.store.documents(["pw"])["pw"][1] == {"lang": "fr"}


def test_repeated_id_in_one_input_last_wins(idx):
    result = idx.add([{"id": "new", "text": "first version"}, {"id": "new", "text": "second version"}])
    assert result.duplicates == ["new"]
    assert idx.store.documents(["new"])["new"][0] == "second version"
    consistent(idx)


def test_delete_removes_documents_and_vectors(idx, tmp_path):
    result = idx.delete(["bank", "nope"])
    assert result.deleted == ["bank"] and result.missing == ["nope"]
    consistent(idx)
    ids = [h.id for h in Searcher(tmp_path / "idx").search("the bank of the river", k=10)]
    assert "bank" not in ids and len(ids) == 4


def test_long_documents_are_split_and_the_matching_passage_is_named(tiny_model, tmp_path):
    index = Index.create(tmp_path / "long", model=tiny_model, passage_overlap=8)
    result = index.add([{"id": "long", "text": LONG}, *DOCS])
    assert result.passages > len(DOCS) + 1
    consistent(index)
    rows = sorted(index.store.passages(index.vectors.ids().tolist()).values(), key=lambda r: (r[0], r[1].order))
    long_rows = [passage for doc_id, passage in rows if doc_id == "long"]
    assert len(long_rows) >= 3
    assert long_rows[0].start == 0 and long_rows[-1].end == len(LONG)
    for r in long_rows:
        assert LONG[r.start : r.end] == r.text
    target = long_rows[2]
    hit = Searcher(index).search(target.text, k=1)[0]
    assert hit.id == "long" and hit.text == LONG  # one hit per document, the whole text
    assert hit.passage.order == 2 and hit.passage.text == target.text
    assert (hit.passage.start, hit.passage.end) == (target.start, target.end)


def test_documents_are_unique_in_results(tiny_model, tmp_path):
    index = Index.create(tmp_path / "u", model=tiny_model)
    index.add([{"id": "long", "text": LONG}, *DOCS])
    hits = Searcher(index).search("the quick brown fox", k=10)
    assert len(hits) == 6 and len({h.id for h in hits}) == 6
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_where_filter_returns_k_matching_documents(tiny_model, tmp_path):
    index = Index.create(tmp_path / "f", model=tiny_model)
    docs = [{"id": f"en{i}", "text": f"the fox number {i}", "metadata": {"lang": "en"}} for i in range(30)]
    docs += [{"id": f"ko{i}", "text": f"배를 {i}", "metadata": {"lang": "ko", "n": i}} for i in range(5)]
    index.add(docs)
    searcher = Searcher(index)
    # The Korean documents are nowhere near the top of the unfiltered results...
    assert not any(h.id.startswith("ko") for h in searcher.search("the fox number 3", k=5))
    # ...but a filter still yields k of them.
    hits = searcher.search("the fox number 3", k=4, where={"lang": "ko"})
    assert len(hits) == 4 and all(h.metadata["lang"] == "ko" for h in hits)
    assert len(searcher.search("the fox", k=10, where={"lang": "ko"})) == 5
    assert [h.id for h in searcher.search("x", k=3, where={"n": "2"})] == ["ko2"]  # CLI strings match numbers
    assert [h.id for h in searcher.search("x", k=3, where={"n": 2})] == ["ko2"]
    assert searcher.search("x", k=3, where={"lang": "en", "n": 2}) == []


def test_filter_values_are_never_sql(idx):
    searcher = Searcher(idx)
    for value in ["en' OR '1'='1", 'en" OR 1=1 --', "'; DROP TABLE documents; --"]:
        assert searcher.search("reset", k=5, where={"lang": value}) == []
    assert searcher.search("reset", k=5, where={"la'ng\"": "en"}) == []
    assert idx.store.counts() == (5, 5)


def test_k_bounds(idx):
    searcher = Searcher(idx)
    assert len(searcher.search("bank", k=50)) == 5
    for bad in (0, -1):
        with pytest.raises(SemsearchError, match="k must be"):
            searcher.search("bank", k=bad)
    with pytest.raises(SemsearchError, match="empty"):
        searcher.search("   ")


def test_search_many_matches_search(idx):
    searcher = Searcher(idx)
    queries = [d["text"] for d in DOCS]
    many = searcher.search_many(queries, k=2)
    assert [[h.id for h in hits] for hits in many] == [[h.id for h in searcher.search(q, k=2)] for q in queries]


def test_korean_round_trip(idx):
    hits = Searcher(idx).search("배를 먹었다", k=2, where={"lang": "ko"})
    assert hits[0].id == "pear"


def test_rebuild_switches_configuration(idx, tiny_model, tmp_path):
    result = idx.rebuild(layer=-1, pooling="max")
    assert result.documents == 5 and result.passages == 5
    consistent(idx)
    cfg = Index.open(tmp_path / "idx").config
    assert cfg["layer"] == -1 and cfg["pooling"] == "max"
    expected = Encoder.load(tiny_model, layer=-1, pooling="max").encode([DOCS[1]["text"]])[0]
    hit = Searcher(tmp_path / "idx").search(DOCS[1]["text"], k=1)[0]
    assert hit.id == "bank" and hit.score == pytest.approx(1.0, abs=1e-4)
    stored = dict(zip(*next(idx.store.iter_vectors(32))))
    pid = next(iter(idx.store.passage_ids_of(["bank"])))
    np.testing.assert_allclose(stored[pid], expected, atol=1e-5)


def test_searches_use_the_old_index_until_rebuild_completes(idx, tmp_path):
    reader = Searcher(tmp_path / "idx")
    seen = []

    def during(n):
        seen.append(reader.index.config["layer"])
        seen.append(reader.search("the bank of the river", k=1)[0].id)

    idx.rebuild(layer=0, progress=during)
    assert seen and all(s in (-2, "bank") for s in seen)
    assert reader.index.config["layer"] == 0 and reader.search("the bank of the river", k=1)[0].id == "bank"


def test_failed_rebuild_leaves_the_index_as_it_was(idx, tmp_path):
    def boom(n):
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        idx.rebuild(layer=-1, progress=boom)
    reopened = Index.open(tmp_path / "idx")
    assert reopened.config["layer"] == -2
    assert "passages_next" not in reopened.store.db.table_names()
    consistent(reopened)
    assert Searcher(reopened).search("the bank of the river", k=1)[0].id == "bank"


def test_open_with_another_model_is_refused(idx, tmp_path, tiny_model_other):
    with pytest.raises(ConfigMismatchError, match="was built with model"):
        Index.open(tmp_path / "idx", model=tiny_model_other)


def test_changed_weights_are_detected(index_of_a_changed_model):
    """The model folder an index was built with is overwritten by other weights: refused."""
    with pytest.raises(ConfigMismatchError, match="no longer matches"):
        Searcher(index_of_a_changed_model).search("bank")


def test_missing_index_and_existing_index_errors(tiny_model, tmp_path, idx):
    with pytest.raises(IndexNotFoundError, match="no semsearch index"):
        Index.open(tmp_path / "nowhere")
    with pytest.raises(IndexExistsError, match="--force"):
        Index.create(tmp_path / "idx", model=tiny_model)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("mine")
    with pytest.raises(IndexExistsError, match="not an empty folder"):
        Index.create(tmp_path / "other", model=tiny_model, force=True)
    assert (tmp_path / "other" / "keep.txt").read_text() == "mine"


def test_forced_build_that_fails_keeps_the_old_index(idx, tmp_path, tiny_model):
    def docs():
        yield {"id": "x", "text": "the fox"}
        raise RuntimeError("reader broke")

    with pytest.raises(RuntimeError):
        Index.build(tmp_path / "idx", docs(), force=True, model=tiny_model)
    assert Index.open(tmp_path / "idx").store.counts() == (5, 5)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".idx")]
    new, result = Index.build(tmp_path / "idx", DOCS[:2], force=True, model=tiny_model)
    assert new.store.counts() == (2, 2) and result.added == 2


def test_interrupted_build_resumes_without_reencoding(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setattr(options_module, "COMMIT_EVERY", 2)

    def docs():
        yield from DOCS[:3]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Index.build(tmp_path / "b", docs(), model=tiny_model)
    partial = Index.open(tmp_path / "b")
    assert partial.config["complete"] is False and partial.store.counts()[0] == 2
    consistent(partial)
    index, result = Index.build(tmp_path / "b", DOCS, model=tiny_model)
    assert (result.unchanged, result.added) == (2, 3)
    assert index.config["complete"] is True and index.store.counts() == (5, 5)
    with pytest.raises(IndexExistsError):
        Index.build(tmp_path / "b", DOCS, model=tiny_model)


def test_stale_or_damaged_faiss_file_is_rebuilt_from_stored_vectors(idx, tmp_path):
    path = tmp_path / "idx"
    (current,) = vector_files(path).values()
    current.write_bytes(b"garbage")
    reader = Index.open(path)
    consistent(reader)
    assert Searcher(reader).search("the bank of the river", k=1)[0].id == "bank"
    current.unlink()
    consistent(Index.open(path))
    # A writer repairs the file on disk.
    Index.open(path).add([{"id": "new", "text": "the fox"}])
    files = vector_files(path)
    assert len(files) == 1 and Index.open(path).vectors.ntotal == 6


def test_a_second_writer_is_refused_with_the_holders_pid(idx, tmp_path):
    import os

    with WriteLock(tmp_path / "idx"):
        with pytest.raises(IndexLockedError, match=f"process {os.getpid()}"):
            Index.open(tmp_path / "idx").add([{"id": "z", "text": "the fox"}])
    Index.open(tmp_path / "idx").add([{"id": "z", "text": "the fox"}])  # free again


def test_long_running_searcher_sees_new_documents(idx, tmp_path):
    reader = Searcher(tmp_path / "idx")
    assert reader.search("hello world", k=1)[0].id != "hello"
    Index.open(tmp_path / "idx").add([{"id": "hello", "text": "hello world"}])
    assert reader.search("hello world", k=1)[0].id == "hello"


def test_empty_documents_are_skipped_and_reported(idx):
    result = idx.add([{"id": "blank", "text": "\u0000\u0001"}, {"id": "ok", "text": "the fox"}])
    assert result.skipped_empty == ["blank"] and result.added == 1
    assert "blank" not in idx.store.documents(["blank"])


def test_bad_documents_are_clear_errors(idx):
    with pytest.raises(SemsearchError, match="no id"):
        idx.add([{"text": "x"}])
    with pytest.raises(SemsearchError, match="metadata must be"):
        idx.add([{"id": "a", "text": "x", "metadata": [1]}])
