"""Sharded indexes: routing by a stable hash, the same hits as one index, split, add/delete, CLI."""

from __future__ import annotations

import hashlib
import json
import random

import numpy as np
import pytest
from click.testing import CliRunner

import index.options as options_module
from cli import cli
from index import Index
from index.distributed.shards import MANIFEST, ShardedIndex, is_sharded, shard_of
from index.distributed.split import split_index
from index.errors import ConfigMismatchError, IndexExistsError, SemsearchError
from index.model.encoder import Encoder
from search import Searcher
from search.sharded import ShardedSearcher, merge_hits, open_searcher

WORDS = ("river bank money loan fish boat password reset login account refund order pizza cheese "
         "garden flower winter snow train ticket music guitar doctor fever 배를 바다 먹었다").split()
QUERIES = ["reset my password", "the river bank", "pizza with cheese", "train ticket refund", "바다 배를"]


def corpus(n: int = 40, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        length = rng.choice([3, 6, 12, 90]) if i % 7 else 160  # some documents span several passages
        docs.append({"id": f"doc-{i}", "text": " ".join(rng.choice(WORDS) for _ in range(length)),
                     "metadata": {"topic": ["a", "b", "c"][i % 3], "n": i}})
    return docs


DOCS = corpus()


def stored(index: Index) -> dict[tuple[str, int], tuple]:
    """``(document id, passage order) -> (passage, vector)`` of everything an index stores."""
    out = {}
    for ids, vecs in index.store.iter_vectors(index.config["dimension"]):
        rows = index.store.passages(ids)
        for pid, vec in zip(ids, vecs):
            doc_id, passage = rows[int(pid)]
            out[(doc_id, passage.order)] = (passage, vec.copy())
    return out


def assert_same_hits(got, want) -> None:
    assert [h.id for h in got] == [h.id for h in want]
    np.testing.assert_allclose([h.score for h in got], [h.score for h in want], atol=1e-5)
    for a, b in zip(got, want):
        assert (a.text, a.metadata, a.passage) == (b.text, b.metadata, b.passage)


@pytest.fixture(scope="module")
def single_and_sharded(tiny_model, tmp_path_factory):
    """One index and a 3-shard index over the same documents (exact flat search)."""
    import index.options

    saved = (index.options.DEFAULT_PRECISION, index.options.DEFAULT_BACKEND)
    index.options.DEFAULT_PRECISION, index.options.DEFAULT_BACKEND = "fp32", "torch"
    try:
        root = tmp_path_factory.mktemp("shards")
        single, _ = Index.build(root / "single", DOCS, model=tiny_model)
        sharded, result = ShardedIndex.build(root / "sharded", DOCS, shards=3, model=tiny_model)
    finally:
        index.options.DEFAULT_PRECISION, index.options.DEFAULT_BACKEND = saved
    assert result.added == len(DOCS)
    return single, sharded


def test_the_shard_of_an_id_is_sha1_mod_n_and_not_pythons_salted_hash():
    for doc_id in ["doc-1", "faq/12.md", "배를", "x" * 300]:
        expected = int(hashlib.sha1(doc_id.encode("utf-8")).hexdigest()[:16], 16)
        for n in (1, 2, 3, 7):
            assert shard_of(doc_id, n) == expected % n
    assert shard_of("e\u0301", 5) == shard_of("\u00e9", 5)  # the NFC id, as the writer stores it
    counts = np.bincount([shard_of(f"doc-{i}", 4) for i in range(400)], minlength=4)
    assert counts.min() > 60  # spread over every shard


def test_documents_live_in_their_hashed_shard(single_and_sharded):
    single, sharded = single_and_sharded
    assert is_sharded(sharded.path) and (sharded.path / MANIFEST).is_file()
    assert [p.name for p in sorted(sharded.path.iterdir()) if p.is_dir()] == ["shard-0", "shard-1", "shard-2"]
    for n, shard in enumerate(sharded.indexes):
        ids = [doc_id for rows in shard.store.iter_documents() for doc_id, _ in rows]
        assert ids and all(shard_of(d, 3) == n for d in ids)
        assert shard.config["complete"] is True
    info = sharded.info()
    assert info.documents == len(DOCS) == single.info().documents
    assert info.passages == single.info().passages and info.complete


def test_sharded_search_gives_one_indexs_hits(single_and_sharded):
    single, sharded = single_and_sharded
    one, many = Searcher(single), ShardedSearcher(sharded)
    for k in (1, 10, len(DOCS) + 5):
        for query in QUERIES:
            assert_same_hits(many.search(query, k=k), one.search(query, k=k))
        assert_same_hits(many.search("river", k=k, where={"topic": "b"}), one.search("river", k=k, where={"topic": "b"}))
    batch = many.search_many(QUERIES, k=4)
    for query, hits in zip(QUERIES, batch):
        assert_same_hits(hits, one.search(query, k=4))


def test_sharded_search_batch_keeps_errors_per_query(single_and_sharded):
    from search.searcher import SearchRequest

    _, sharded = single_and_sharded
    outcomes = ShardedSearcher(sharded).search_batch(
        [SearchRequest("reset my password", 2), SearchRequest("  ", 2), SearchRequest("pizza", 0)])
    assert len(outcomes[0].hits) == 2 and outcomes[0].error is None
    assert "empty" in outcomes[1].error and "k must be" in outcomes[2].error


def test_merge_breaks_ties_by_document_id():
    from index.records import Passage
    from search.searcher import Hit

    def hit(doc_id, score):
        return Hit(doc_id, score, "", {}, Passage(0, 0, 0, ""))

    merged = merge_hits([[hit("b", 0.5), hit("d", 0.1)], [hit("a", 0.5), hit("c", 0.9)]], 3)
    assert [h.id for h in merged] == ["c", "a", "b"]


def test_split_copies_vectors_without_encoding(single_and_sharded, tmp_path, monkeypatch):
    single, _ = single_and_sharded

    def no_encoding(*args, **kwargs):
        raise AssertionError("split must not encode")

    monkeypatch.setattr(Encoder, "encode_ids", no_encoding)
    sharded, result = split_index(single.path, tmp_path / "split", 4)
    assert result.added == len(DOCS) and sharded.manifest.count == 4
    source = stored(single)
    copied = {}
    for shard in sharded.indexes:
        part = stored(shard)
        assert all(shard_of(doc_id, 4) == n for n in [sharded.indexes.index(shard)] for doc_id, _ in part)
        copied.update(part)
    assert copied.keys() == source.keys()
    for key, (passage, vector) in source.items():
        assert copied[key][0] == passage
        assert np.array_equal(copied[key][1], vector)  # the very same float32 vectors
    for key in ("model", "model_fingerprint", "layer", "pooling", "max_length", "precision", "passage_overlap"):
        assert sharded.config[key] == single.config[key]
    monkeypatch.undo()
    one, many = Searcher(single), ShardedSearcher(sharded)
    for query in QUERIES:
        assert_same_hits(many.search(query, k=7), one.search(query, k=7))
    with pytest.raises(IndexExistsError):
        split_index(single.path, tmp_path / "split", 4)


def test_add_and_delete_route_by_the_hash(tiny_model, tmp_path):
    docs = corpus(12, seed=1)
    single, _ = Index.build(tmp_path / "single", docs, model=tiny_model)
    sharded, _ = ShardedIndex.build(tmp_path / "sharded", docs, shards=2, model=tiny_model)
    changes = [{"id": "doc-3", "text": "a new text about snow and trains", "metadata": {"topic": "z"}},
               {"id": "new-1", "text": "guitar music for the doctor", "metadata": {}},
               {"id": "doc-4", "text": docs[4]["text"], "metadata": {"topic": "moved"}}]
    a, b = single.add(changes), sharded.add(changes)
    assert (b.added, b.updated, b.metadata_updated, b.unchanged) == (a.added, a.updated, a.metadata_updated,
                                                                     a.unchanged) == (1, 1, 1, 0)
    assert "new-1" in sharded.indexes[shard_of("new-1", 2)].store.existing(["new-1"])
    deleted = sharded.delete(["doc-5", "missing", "new-1"])
    assert deleted.deleted == ["doc-5", "new-1"] and deleted.missing == ["missing"]
    single.delete(["doc-5", "new-1"])
    one, many = Searcher(single), ShardedSearcher(sharded)
    for query in QUERIES + ["snow trains"]:
        assert_same_hits(many.search(query, k=20), one.search(query, k=20))
    assert sharded.info().documents == single.info().documents == 11


def test_an_interrupted_sharded_build_resumes(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setattr(options_module, "COMMIT_EVERY", 2)
    docs = corpus(14, seed=2)
    committed: list[str] = []

    def crash_after_two_commits(ids):
        committed.extend(ids)
        if len(committed) >= 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ShardedIndex.build(tmp_path / "s", docs, shards=2, model=tiny_model, on_commit=crash_after_two_commits)
    assert is_sharded(tmp_path / "s")
    with pytest.raises(SemsearchError, match="interrupted build of 2 shards"):
        ShardedIndex.build(tmp_path / "s", docs, shards=3, model=tiny_model)
    sharded, result = ShardedIndex.build(tmp_path / "s", docs, shards=2, model=tiny_model)
    assert result.unchanged == len(committed) and result.added == len(docs) - len(committed)
    assert sharded.info().documents == len(docs) and sharded.info().complete
    with pytest.raises(IndexExistsError):
        ShardedIndex.build(tmp_path / "s", docs, shards=2, model=tiny_model)
    again, _ = ShardedIndex.build(tmp_path / "s", docs[:3], shards=3, model=tiny_model, force=True)
    assert again.manifest.count == 3 and again.info().documents == 3


def test_shards_built_differently_are_refused(tiny_model, tmp_path):
    ShardedIndex.build(tmp_path / "s", corpus(6), shards=2, model=tiny_model)
    Index.open(tmp_path / "s" / "shard-1").rebuild(layer=-1)
    with pytest.raises(ConfigMismatchError, match="shard-1"):
        ShardedIndex.open(tmp_path / "s")


def test_the_cli_builds_queries_adds_deletes_and_splits(tiny_model, tmp_path):
    runner = CliRunner()
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps({"_id": d["id"], "text": d["text"], "metadata": d["metadata"]}) + "\n"
                              for d in DOCS), encoding="utf-8")

    def ok(*args):
        result = runner.invoke(cli, [str(a) for a in args])
        assert result.exit_code == 0, result.output
        return result.output

    ok("index", "build", source, "--index", tmp_path / "one", "--model", tiny_model, "-q")
    ok("index", "build", source, "--index", tmp_path / "three", "--model", tiny_model, "--shards", 3, "-q")
    ok("index", "split", "--shards", 2, "--index", tmp_path / "one", "--into", tmp_path / "two", "-q")
    info = json.loads(ok("index", "info", "--index", tmp_path / "three", "--json"))
    assert info["shard_count"] == 3 and info["documents"] == len(DOCS) and len(info["shards"]) == 3
    assert "shard 2" in ok("index", "info", "--index", tmp_path / "three")

    def hits(where):
        out = ok("query", "the river bank", "--index", where, "-k", 5, "--json")
        return [(h["id"], pytest.approx(h["score"], abs=1e-5)) for h in json.loads(out)["hits"]]

    assert hits(tmp_path / "three") == hits(tmp_path / "one") == hits(tmp_path / "two")
    extra = tmp_path / "extra.jsonl"
    extra.write_text(json.dumps({"_id": "river-doc", "text": "the river bank"}) + "\n", encoding="utf-8")
    ok("index", "add", extra, "--index", tmp_path / "three", "-q")
    assert hits(tmp_path / "three")[0] == ("river-doc", pytest.approx(1.0, abs=1e-4))
    ok("index", "delete", "river-doc", "--index", tmp_path / "three")
    assert hits(tmp_path / "three") == hits(tmp_path / "one")
    assert isinstance(open_searcher(tmp_path / "three"), ShardedSearcher)
    assert isinstance(open_searcher(tmp_path / "one"), Searcher)
    refused = runner.invoke(cli, ["index", "build", str(source), "--index", str(tmp_path / "three"),
                                  "--model", tiny_model, "--shards", "3", "-q"])
    assert refused.exit_code == 1 and "already exists" in refused.output
    check = runner.invoke(cli, ["index", "check", "--index", str(tmp_path / "three")])
    assert check.exit_code == 1 and "is a sharded index" in check.output and "shard-0" in check.output
    serve = runner.invoke(cli, ["serve", "--index", str(tmp_path / "three")])
    assert serve.exit_code == 1 and "--engine ray" in serve.output
