"""Hybrid retrieval: BM25 (bm25s) over the passages, fused with the vector ranking by reciprocal rank.

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
from search.hybrid import RRF_K, Ranked, fuse, rrf_score

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
def test_rrf_fuses_two_rankings_by_reciprocal_rank():
    dense = [Ranked("A", 0.9, p(0)), Ranked("B", 0.8, p(0)), Ranked("C", 0.7, p(0))]
    lexical = [Ranked("C", 12.0, p(3)), Ranked("D", 9.0, p(1)), Ranked("A", 1.0, p(2))]
    fused = fuse(dense, lexical, k=10)
    scores = {f.id: f.score for f in fused}
    assert scores["A"] == pytest.approx(1 / 61 + 1 / 63)
    assert scores["C"] == pytest.approx(1 / 63 + 1 / 61)
    assert scores["B"] == pytest.approx(1 / 62) and scores["D"] == pytest.approx(1 / 62)
    # A and C tie on score and on best rank (1): by id. B and D tie likewise.
    assert [f.id for f in fused] == ["A", "C", "B", "D"]
    by_id = {f.id: f for f in fused}
    assert (by_id["C"].dense_rank, by_id["C"].lexical_rank) == (3, 1)
    assert by_id["C"].passage.order == 3  # shown from the ranking where it ranked better
    assert by_id["A"].passage.order == 0  # better in the vector ranking
    assert by_id["D"].dense_rank is None and by_id["D"].passage.order == 1
    assert [f.id for f in fuse(dense, lexical, k=2)] == ["A", "C"]


def test_rrf_constant_and_one_sided_rankings():
    assert RRF_K == 60
    assert rrf_score([1, None]) == pytest.approx(1 / 61)
    assert rrf_score([1, 1], rrf_k=0) == pytest.approx(2.0)
    # Being second in both rankings beats being first in one only.
    dense = [Ranked("top-dense", 1, p()), Ranked("both", 1, p())]
    lexical = [Ranked("top-lexical", 1, p()), Ranked("both", 1, p())]
    assert fuse(dense, lexical, k=3)[0].id == "both"
    assert [f.id for f in fuse(dense, [], k=5)] == ["top-dense", "both"]


# --- BM25 on an index ---------------------------------------------------------------------
def test_bm25_finds_the_document_with_the_exact_keyword(hybrid_index):
    searcher = Searcher(hybrid_index)
    bm25_hits = searcher.search_bm25(["xylophones"], k=5)[0]  # stemmed: xylophones -> xylophon
    assert set(ids(bm25_hits)) == {"zebra", "ko-xylo"}
    assert all(h.score > 0 for h in bm25_hits)
    hits = searcher.search("zoo concert", k=3)  # hybrid: recorded by the index
    assert hits[0].id == "zebra"
    assert 1 / (RRF_K + 1) < hits[0].score <= 2 / (RRF_K + 1) + 1e-12  # an RRF score, from both rankings
    assert "xylophone" in hits[0].passage.text
    dense = searcher.search("zoo concert", k=3, hybrid=False)
    assert all(h.score < 1.0001 for h in dense) and dense[0].score > 2 / (RRF_K + 1)  # cosine, not RRF


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
    scores = [m.score for m in ([reply.match] if reply.match else []) + reply.runners_up]
    assert scores and all(score > 2 / (RRF_K + 1) for score in scores)  # cosines, not RRF scores


def test_a_plain_index_is_not_hybrid_until_asked(tmp_path, tiny_model):
    index, _ = Index.build(tmp_path / "plain", DOCS, model=tiny_model)
    assert index.info().hybrid is False and not bm25_folders(index.path)
    searcher = Searcher(index)
    assert all(h.score > 0.1 for h in searcher.search("xylophone", k=3))  # cosine scores: dense
    assert searcher.search("zoo", k=1, hybrid=True)[0].id == "zebra"  # built in memory
    assert not bm25_folders(index.path)
    index.set_setting("hybrid", True)  # recorded: the write session saves the BM25 index
    assert list(bm25_folders(index.path)) == [index.store.generation()] and index.info().hybrid
    assert Searcher(index.path).search("xylophone", k=1)[0].score < 0.05  # hybrid by default now
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

    hit, _ = top(["--index", idx])
    assert hit["id"] == "zebra" and hit["score"] < 2 / (RRF_K + 1) + 1e-9  # hybrid by default
    hit, _ = top(["--index", idx, "--no-hybrid"])
    assert hit["score"] > 2 / (RRF_K + 1)
    hit, err = top(["--index", plain, "--hybrid"])
    assert hit["id"] == "zebra" and "building it in memory" in err and len(err.strip().splitlines()) == 1
    hit, _ = top(["--index", plain])
    assert hit["score"] > 2 / (RRF_K + 1)

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
