"""Hybrid retrieval: BM25 (bm25s) over the passages, fused with the vector ranking by z-scores.

On the tiny random BERT, whose vector ranking is arbitrary: what a keyword
finds there is BM25's doing. Covers the fusion math, the BM25 index kept in
step with add/delete/rebuild (one folder per committed generation, never a
stale one served), metadata filters, the CLI flags and the missing-bm25s error.
"""

from __future__ import annotations

import json
import shutil
import sys

import pytest
from click.testing import CliRunner

from cli import cli
from index import Index, SemsearchError
from index.lexical import bm25 as lexical_module
from index.lexical.bm25 import LexicalIndex, bm25_folders
from index.records import Passage
from search import Searcher
from search.hybrid import DEPTH, Ranked, fuse, z_scores

DOCS = [
    {"id": "pw", "text": "How do I reset my password? Use the forgot password link.", "metadata": {"lang": "en"}},
    {"id": "zebra", "text": "The xylophone concert was held at the zoo next to the zebras.", "metadata": {"lang": "en"}},
    {"id": "bank", "text": "We sat on the river bank and watched the boats.", "metadata": {"lang": "en"}},
    {"id": "fox", "text": "The quick brown fox jumps over the lazy dog.", "metadata": {"lang": "en"}},
    {"id": "boat", "text": "배를 타고 바다로 갔다", "metadata": {"lang": "ko"}},
    {"id": "ko-xylo", "text": "실로폰 xylophone 연주회", "metadata": {"lang": "ko"}},
]


@pytest.fixture
def hybrid_index(tmp_path, tiny_model):
    index, _ = Index.build(tmp_path / "idx", DOCS, model=tiny_model, hybrid=True)
    yield index
    index.close()


def ids(hits):
    return [h.id for h in hits]


def p(order=0):
    return Passage(order, 0, 1, "x")


# --- the fusion ------------------------------------------------------------------------------
def test_the_fusion_averages_each_rankings_z_scores():
    dense = [Ranked("A", 0.9, p(0)), Ranked("B", 0.8, p(0)), Ranked("C", 0.7, p(0))]
    lexical = [Ranked("C", 12.0, p(3)), Ranked("D", 9.0, p(1)), Ranked("A", 3.0, p(2))]
    fused = fuse(dense, lexical, k=10)
    zd = dict(zip("ABC", z_scores([0.9, 0.8, 0.7])))
    zl = dict(zip("CDA", z_scores([12.0, 9.0, 3.0])))
    assert zd["A"] == pytest.approx(1.2247, abs=1e-4) and zl["C"] == pytest.approx(1.0690, abs=1e-4)
    scores = {f.id: f.score for f in fused}
    assert scores["A"] == pytest.approx((zd["A"] + zl["A"]) / 2)
    assert scores["C"] == pytest.approx((zd["C"] + zl["C"]) / 2)
    assert scores["B"] == pytest.approx((zd["B"] + min(zl.values())) / 2)  # missing: the ranking's lowest
    assert scores["D"] == pytest.approx((min(zd.values()) + zl["D"]) / 2)
    assert [f.id for f in fused] == sorted(scores, key=lambda d: -scores[d])
    by_id = {f.id: f for f in fused}
    assert (by_id["C"].dense_rank, by_id["C"].lexical_rank) == (3, 1)
    assert by_id["C"].passage.order == 3  # shown from the ranking where it ranked better
    assert by_id["A"].passage.order == 0  # better in the vector ranking
    assert by_id["D"].dense_rank is None and by_id["D"].passage.order == 1
    assert [f.id for f in fuse(dense, lexical, k=2)] == [f.id for f in fused][:2]


def test_z_scores_and_one_sided_rankings():
    assert z_scores([]) == [] and z_scores([5.0, 5.0]) == [0.0, 0.0]
    assert z_scores([1.0, 3.0]) == pytest.approx([-1.0, 1.0])
    # BM25 matched fewer documents than asked: the others score 0 there, below its one match.
    vectors = [Ranked("x", 0.9, p()), Ranked("y", 0.85, p()), Ranked("w", 0.1, p())]
    one = fuse(vectors, [Ranked("y", 2.0, p())], k=2, lexical_complete=True)
    assert [f.id for f in one] == ["y", "x"]
    assert [f.id for f in fuse(vectors, [Ranked("y", 2.0, p())], k=2)] == [
        "x", "y"]  # a lone match of a truncated ranking says nothing
    # Being near the top of both rankings beats being first in one only.
    dense = [Ranked("top-dense", 0.9, p()), Ranked("both", 0.85, p()), Ranked("low", 0.1, p())]
    lexical = [Ranked("top-lexical", 9.0, p()), Ranked("both", 8.5, p()), Ranked("low-lexical", 1.0, p())]
    assert fuse(dense, lexical, k=3)[0].id == "both"
    assert [f.id for f in fuse(dense, [], k=5)] == ["top-dense", "both", "low"]  # no BM25 match: the vectors' order
    tie = [Ranked("b", 1.0, p()), Ranked("a", 1.0, p())]
    assert [f.id for f in fuse(tie, [], k=2)] == ["b", "a"]  # equal scores: the better rank first


def fused_by_hand(searcher, query, k):
    """The hybrid ranking computed from the vector and BM25 rankings the searcher gives alone."""
    depth = max(k, DEPTH)
    dense = [Ranked(h.id, h.score, h.passage) for h in searcher.search(query, k=depth, hybrid=False)]
    lexical = [Ranked(h.id, h.score, h.passage) for h in searcher.search_bm25([query], k=depth)[0]]
    return [(f.id, f.score) for f in fuse(dense, lexical, k, lexical_complete=len(lexical) < depth)]


def same_ranking(hits, expected):
    assert [h.id for h in hits] == [i for i, _ in expected]
    assert [h.score for h in hits] == pytest.approx([s for _, s in expected])


# --- BM25 on an index ---------------------------------------------------------------------
def test_bm25_finds_the_document_with_the_exact_keyword(hybrid_index):
    searcher = Searcher(hybrid_index)
    bm25_hits = searcher.search_bm25(["xylophones"], k=5)[0]  # stemmed: xylophones -> xylophon
    assert set(ids(bm25_hits)) == {"zebra", "ko-xylo"}
    assert all(h.score > 0 for h in bm25_hits)
    hits = searcher.search("zoo concert", k=3)  # hybrid: recorded by the index
    assert hits[0].id == "zebra"
    same_ranking(hits, fused_by_hand(searcher, "zoo concert", 3))
    assert "xylophone" in hits[0].passage.text
    dense = searcher.search("zoo concert", k=3, hybrid=False)
    assert all(h.score < 1.0001 for h in dense) and [h.score for h in dense] != [h.score for h in hits]


def test_stopwords_only_query_falls_back_to_the_vector_ranking(hybrid_index):
    searcher = Searcher(hybrid_index)
    assert searcher.search_bm25(["the of and"], k=5) == [[]]
    dense = ids(searcher.search("the of and", k=6, hybrid=False))
    assert ids(searcher.search("the of and", k=6, hybrid=True)) == dense


def test_the_bm25_index_follows_add_delete_and_rebuild(hybrid_index):
    folder = hybrid_index.path
    searcher = Searcher(hybrid_index)
    generation = hybrid_index.store.generation()
    assert list(bm25_folders(folder)) == [generation]

    hybrid_index.delete(["zebra"])
    assert list(bm25_folders(folder)) == [hybrid_index.store.generation()] != [generation]
    assert ids(searcher.search_bm25(["xylophone"], k=5)[0]) == ["ko-xylo"]
    assert "zebra" not in ids(searcher.search("zoo concert", k=10))

    hybrid_index.add([{"id": "quokka", "text": "A quokka smiled at the photographer.", "metadata": {"lang": "en"}}])
    assert list(bm25_folders(folder)) == [hybrid_index.store.generation()]
    assert ids(searcher.search_bm25(["quokka"], k=5)[0]) == ["quokka"]
    assert searcher.search("quokka", k=3)[0].id == "quokka"

    before = hybrid_index.store.generation()
    hybrid_index.add([{"id": "quokka", "text": "A quokka smiled at the photographer.", "metadata": {"lang": "en"}}])
    assert hybrid_index.store.generation() == before and list(bm25_folders(folder)) == [before]  # nothing changed

    hybrid_index.rebuild(layer=-1)
    assert list(bm25_folders(folder)) == [hybrid_index.store.generation()] != [before]
    assert ids(searcher.search_bm25(["quokka"], k=5)[0]) == ["quokka"]
    assert "zebra" not in ids(searcher.search("zoo concert", k=10))


def test_a_reader_opened_before_a_write_never_serves_a_stale_bm25_index(hybrid_index, tmp_path):
    reader = Searcher(Index.open(hybrid_index.path))
    assert "zebra" in ids(reader.search_bm25(["xylophone"], k=5)[0])  # loaded for this generation
    old_generation = reader.generation

    # A write that leaves no BM25 folder for its generation (a plain writer session, as a killed
    # writer or `index repair` would): the reader builds the index of the new generation itself.
    with hybrid_index.writer() as writer:
        writer.delete(["zebra"])
    assert hybrid_index.store.generation() not in bm25_folders(hybrid_index.path)
    assert ids(reader.search_bm25(["xylophone"], k=5)[0]) == ["ko-xylo"]
    assert reader.generation != old_generation
    assert "zebra" not in ids(reader.search("xylophone", k=10))

    # A folder named after the committed generation but holding an older state is not served.
    with hybrid_index.store.transaction(immediate=False):
        stale = LexicalIndex.build(hybrid_index.store, hybrid_index.store.generation())
    hybrid_index.add([{"id": "quokka", "text": "quokka quokka", "metadata": {}}])
    current = hybrid_index.store.generation()
    shutil.rmtree(hybrid_index.path / f"bm25-{current}")
    stale.generation = current
    stale.save(hybrid_index.path)
    fresh_reader = Searcher(Index.open(hybrid_index.path))
    assert ids(fresh_reader.search_bm25(["quokka"], k=5)[0]) == ["quokka"]
    assert fresh_reader.search("quokka", k=1)[0].id == "quokka"


def test_where_filters_apply_to_the_bm25_candidates(hybrid_index):
    searcher = Searcher(hybrid_index)
    assert ids(searcher.search_bm25(["xylophone"], k=5, where={"lang": "ko"})[0]) == ["ko-xylo"]
    hits = searcher.search("xylophone", k=5, where={"lang": "ko"}, hybrid=True)
    assert sorted(ids(hits)) == ["boat", "ko-xylo"] and hits[0].id == "ko-xylo"
    assert searcher.search("xylophone", k=5, where={"lang": "none"}, hybrid=True) == []
    en = searcher.search("xylophone", k=4, where={"lang": "en"}, hybrid=True)
    assert len(en) == 4 and en[0].id == "zebra" and all(h.metadata["lang"] == "en" for h in en)


def test_faq_answers_use_cosine_scores_even_on_a_hybrid_index(hybrid_index):
    from search import FAQ

    reply = FAQ(hybrid_index, threshold=0.0).answer("zoo concert")
    got = {m.id: m.score for m in ([reply.match] if reply.match else []) + reply.runners_up}
    cosines = {h.id: h.score for h in Searcher(hybrid_index).search("zoo concert", k=20, hybrid=False)}
    assert got and all(score == pytest.approx(cosines[i]) for i, score in got.items())  # cosines, not fused


def test_a_plain_index_is_not_hybrid_until_asked(tmp_path, tiny_model):
    index, _ = Index.build(tmp_path / "plain", DOCS, model=tiny_model)
    assert index.info().hybrid is False and not bm25_folders(index.path)
    searcher = Searcher(index)
    assert all(h.score > 0.1 for h in searcher.search("xylophone", k=3))  # cosine scores: dense
    assert searcher.search("zoo", k=1, hybrid=True)[0].id == "zebra"  # built in memory
    assert not bm25_folders(index.path)
    index.set_setting("hybrid", True)  # recorded: the write session saves the BM25 index
    assert list(bm25_folders(index.path)) == [index.store.generation()] and index.info().hybrid
    recorded = Searcher(index.path)
    same_ranking(recorded.search("xylophone", k=3), fused_by_hand(recorded, "xylophone", 3))  # hybrid by default now
    index.set_setting("hybrid", False)
    assert not bm25_folders(index.path)


# --- the command line -------------------------------------------------------------------
def write_corpus(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"_id": d["id"], "text": d["text"], "metadata": d["metadata"]},
                                       ensure_ascii=False) + "\n" for d in DOCS), encoding="utf-8")
    return path


def test_cli_build_query_and_eval_flags(tmp_path, tiny_model):
    runner = CliRunner()
    corpus, idx, plain = write_corpus(tmp_path), str(tmp_path / "idx"), str(tmp_path / "plain")
    for path, extra in ((idx, ["--hybrid"]), (plain, [])):
        result = runner.invoke(cli, ["index", "build", str(corpus), "--index", path, "--model", tiny_model, "-q", *extra])
        assert result.exit_code == 0, result.output
    info = json.loads(runner.invoke(cli, ["index", "info", "--index", idx, "--json"]).stdout)
    assert info["hybrid"] is True
    assert json.loads(runner.invoke(cli, ["index", "info", "--index", plain, "--json"]).stdout)["hybrid"] is False

    def top(args):
        result = runner.invoke(cli, ["query", "zoo concert", "--json", *args])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)["hits"][0], result.stderr

    fused = Searcher(idx).search("zoo concert", k=1, hybrid=True)[0].score
    cosine = Searcher(idx).search("zoo concert", k=1, hybrid=False)[0].score
    assert fused != pytest.approx(cosine, abs=1e-3)
    hit, _ = top(["--index", idx])
    assert hit["id"] == "zebra" and hit["score"] == pytest.approx(fused, abs=1e-4)  # hybrid by default
    hit, _ = top(["--index", idx, "--no-hybrid"])
    assert hit["score"] == pytest.approx(cosine, abs=1e-4)
    hit, err = top(["--index", plain, "--hybrid"])
    assert hit["id"] == "zebra" and "building it in memory" in err and len(err.strip().splitlines()) == 1
    assert hit["score"] == pytest.approx(fused, abs=1e-4)
    hit, _ = top(["--index", plain])
    assert hit["score"] == pytest.approx(cosine, abs=1e-4)

    queries, qrels = tmp_path / "q.jsonl", tmp_path / "qrels.tsv"
    queries.write_text('{"_id": "q1", "text": "zoo concert"}\n')
    qrels.write_text("query-id\tcorpus-id\tscore\nq1\tzebra\t1\n")
    args = ["eval", "--queries", str(queries), "--qrels", str(qrels), "--index", plain]
    data = json.loads(runner.invoke(cli, [*args, "--hybrid", "--json"]).stdout)
    assert data["hybrid"] is True and data["ndcg@10"] == pytest.approx(1.0)
    assert json.loads(runner.invoke(cli, [*args, "--json"]).stdout)["hybrid"] is False
    assert "layer -2 mean hybrid" in runner.invoke(cli, [*args, "--hybrid"]).stdout

    # Replacing an index (built aside, swapped in) brings its BM25 index along.
    result = runner.invoke(cli, ["index", "build", str(corpus), "--index", plain, "--model", tiny_model, "-q",
                                 "--force", "--hybrid"])
    assert result.exit_code == 0, result.output
    info = json.loads(runner.invoke(cli, ["index", "info", "--index", plain, "--json"]).stdout)
    assert info["hybrid"] is True and list(bm25_folders(tmp_path / "plain")) == [info["generation"]]


def test_missing_bm25s_is_one_clear_line(tmp_path, tiny_model, monkeypatch):
    runner = CliRunner()
    corpus = write_corpus(tmp_path)
    plain = str(tmp_path / "plain")
    assert runner.invoke(cli, ["index", "build", str(corpus), "--index", plain, "--model", tiny_model, "-q"]).exit_code == 0
    monkeypatch.setitem(sys.modules, "bm25s", None)  # `import bm25s` now raises ImportError
    with pytest.raises(SemsearchError, match="pip install 'semsearch\\[hybrid\\]'"):
        lexical_module.require()
    target = tmp_path / "new"
    for args in (["index", "build", str(corpus), "--index", str(target), "--model", tiny_model, "--hybrid"],
                 ["query", "xylophone", "--index", plain, "--hybrid"]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 1, result.output
        lines = result.output.strip().splitlines()
        assert lines == ["Error: --hybrid needs bm25s: pip install 'semsearch[hybrid]'"], result.output
    assert not target.exists()  # refused before anything was written
    assert runner.invoke(cli, ["query", "xylophone", "--index", plain]).exit_code == 0  # dense needs no bm25s
