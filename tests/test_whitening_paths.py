"""The whitening of an index reaches every query path: each applies the index's own transform.

One test per path, on the tiny random BERT with ``--whitening on``: the
library (``Searcher``, ``FAQ``), ``semsearch serve``, the torch-free query
process, a sharded index (one fit shared by every shard), the CLI (``embed``
raw or ``--whiten-with``, ``index info``, ``index rebuild``) and ``eval``.
Each compares the scores served with ``transform(raw query) · transform(raw
stored passage)`` computed here from the stored raw vectors.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from click.testing import CliRunner

from cli import cli as main
from index import Index
from index.distributed.shards import ShardedIndex
from index.storage import whitened
from search import FAQ, Searcher
from search.faq import faq_documents
from servers import ready, serving

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["the quick brown fox", "hello world", "the cat sat on the mat", "money in the bank",
         "a boat on the sea", "apple and orange fruit", "how do i reset my password", "where is my invoice",
         "the bank of the river", "rain is expected tomorrow", "my laptop will not start", "cheap flights"]
DOCS = [{"id": f"d{i}", "text": t} for i, t in enumerate(TEXTS)]
QUERY = "the bank of the river"


def expected_scores(index: Index, query: str) -> dict[str, float]:
    """Each document's best passage score, computed here from the stored raw vectors."""
    with index.snapshot() as snap:
        transform = snap.whitening
        assert transform is not None
        q = transform.apply(snap.encoder.encode([query])[0])
        dimension = int(snap.info["dimension"])
        out: dict[str, float] = {}
        for doc_id in [d for rows in index.store.iter_documents() for d, _ in rows]:
            pids = index.store.passage_ids_of([doc_id])
            stored = index.store.vectors_of(pids, dimension)
            out[doc_id] = max(float(transform.apply(v) @ q) for v in stored.values())
    return out


def assert_hits(hits, expected: dict[str, float]) -> None:
    assert hits
    for doc_id, score in hits:
        assert score == pytest.approx(expected[doc_id], abs=1e-4), doc_id
    best = sorted(expected.values(), reverse=True)[: len(hits)]
    assert [s for _, s in hits] == pytest.approx(best, abs=1e-4)


@pytest.fixture
def whitened_index(tiny_model, tmp_path) -> Path:
    Index.build(tmp_path / "idx", DOCS, model=tiny_model, whitening="on")
    return tmp_path / "idx"


def test_searcher_and_faq(tiny_model, tmp_path):
    entries = [{"id": "moor", "question": "where can i moor my boat", "answer": "At the pier."},
               {"id": "pw", "question": "can i change my password twice", "answer": "Yes."}]
    Index.build(tmp_path / "faq", [*faq_documents(entries), *DOCS], model=tiny_model, whitening="on")
    index = Index.open(tmp_path / "faq")
    expected = expected_scores(index, QUERY)
    assert_hits([(h.id, h.score) for h in Searcher(index).search(QUERY, k=4)], expected)
    answer = FAQ(tmp_path / "faq").answer("where can i moor my boat")
    assert answer.match is not None and answer.match.score == pytest.approx(1.0, abs=1e-4)


def test_serve_searches_whitened_and_embeds_raw(whitened_index):
    index = Index.open(whitened_index)
    expected = expected_scores(index, QUERY)
    with serving(whitened_index) as (url, _):
        ready(url)
        body = httpx.get(f"{url}/search", params={"q": QUERY, "k": 4}).json()
        assert_hits([(h["id"], h["score"]) for h in body["hits"]], expected)
        vectors = httpx.post(f"{url}/embed", json={"texts": [QUERY]}).json()["vectors"]
    raw = index.encoder.encode([QUERY])[0]
    assert np.allclose(vectors[0], raw, atol=1e-6)  # /embed gives the method's raw vectors


def test_a_torch_free_query_process_whitens(tiny_model, tmp_path):
    from test_onnx import QUERY as PROGRAM

    Index.build(tmp_path / "idx", DOCS, model=tiny_model, backend="onnx", precision="fp32", whitening="on")
    out = subprocess.run([sys.executable, "-c", PROGRAM, QUERY, str(tmp_path / "idx")], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stderr.strip().splitlines()[-1]) == []  # neither torch nor transformers
    expected = expected_scores(Index.open(tmp_path / "idx"), QUERY)
    assert_hits([(h["id"], h["score"]) for h in json.loads(out.stdout)["hits"]], expected)


def test_a_sharded_index_shares_one_fit(tiny_model, tmp_path):
    sharded, _ = ShardedIndex.build(tmp_path / "sharded", DOCS, shards=3, model=tiny_model, whitening="on")
    fits = [ix.config[whitened.FIT] for ix in sharded.indexes]
    assert len({f["sha256"] for f in fits}) == 1 and fits[0]["shared"] and fits[0]["vectors"] == len(DOCS)
    from search.sharded import open_searcher

    hits = open_searcher(tmp_path / "sharded").search(QUERY, k=5)
    expected = {}
    for shard in sharded.indexes:
        expected.update(expected_scores(shard, QUERY))
    assert_hits([(h.id, h.score) for h in hits], expected)
    sharded.add([{"id": f"n{i}", "text": f"{t} again {i}"} for i, t in enumerate(TEXTS * 2)])  # 36 >= 2 x 12
    after = [ix.config[whitened.FIT] for ix in sharded.indexes]
    assert len({f["sha256"] for f in after}) == 1 and after[0]["sha256"] != fits[0]["sha256"]
    assert all(ix.check().ok for ix in sharded.indexes)


def test_cli_embed_info_rebuild_and_eval(whitened_index, tmp_path):
    runner = CliRunner()
    index = Index.open(whitened_index)
    raw = json.loads(runner.invoke(main, ["embed", QUERY, "--model", index.config["model"]]).output)["vector"]
    assert np.allclose(raw, index.encoder.encode([QUERY])[0], atol=1e-6)
    out = runner.invoke(main, ["embed", QUERY, "--whiten-with", str(whitened_index)])
    assert out.exit_code == 0, out.output
    with index.snapshot() as snap:
        assert np.allclose(json.loads(out.output)["vector"], snap.whiten(np.asarray(raw, np.float32)), atol=1e-6)
    info = json.loads(runner.invoke(main, ["index", "info", "--index", str(whitened_index), "--json"]).output)
    assert info["whitening"]["mode"] == "on" and info["whitening"]["fit"]["dimension"] == 32
    queries, qrels = tmp_path / "q.jsonl", tmp_path / "qrels.tsv"
    queries.write_text("".join(json.dumps({"_id": d["id"], "text": d["text"]}) + "\n" for d in DOCS))
    qrels.write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{d['id']}\t{d['id']}\t1\n" for d in DOCS))
    out = runner.invoke(main, ["eval", "--queries", str(queries), "--qrels", str(qrels), "--index",
                               str(whitened_index), "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout[out.stdout.index("{"):])["ndcg@10"] == pytest.approx(1.0)  # each finds itself
    out = runner.invoke(main, ["index", "rebuild", "--index", str(whitened_index), "--whitening-dims", "8"])
    assert out.exit_code == 0, out.output
    assert Index.open(whitened_index).vectors.dimension == 8
    out = runner.invoke(main, ["index", "rebuild", "--index", str(whitened_index), "--whitening-dims", "99"])
    assert out.exit_code != 0 and "Traceback" not in out.output and "99" in out.output
    Index.build(tmp_path / "plain", DOCS, model=index.config["model"], whitening="off")
    out = runner.invoke(main, ["embed", QUERY, "--whiten-with", str(tmp_path / "plain")])
    assert out.exit_code != 0 and "is not whitened" in out.output


def test_an_engines_raw_vectors_are_whitened_by_the_writer(tiny_model, tmp_path):
    """The seam the Ray engine uses: an engine returns the method's raw vectors (a Ray actor loads
    its own encoder from the recorded configuration); the writer stores them raw and whitens them
    for FAISS with the index's transform."""
    from index.ingest.engines import LocalEngine
    from index.model.config import EncoderConfig
    from index.model.encoder import Encoder

    index, _ = Index.build(tmp_path / "idx", DOCS, model=tiny_model, whitening="on")
    engine = LocalEngine(lambda: Encoder.for_config(EncoderConfig.from_info(index.config)))
    index.add([{"id": "e1", "text": "a ship sails on the ocean"}], engine=engine)
    expected = expected_scores(index, "a ship sails on the ocean")
    assert expected["e1"] == pytest.approx(1.0, abs=1e-4)
    assert_hits([(h.id, h.score) for h in Searcher(index).search("a ship sails on the ocean", k=4)], expected)
    assert index.check().ok


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_filtered_searches_score_whitened_as_unfiltered_ones_do(tiny_model, tmp_path, kind):
    """The filter planner scores a few allowed passages exactly (from memory on flat, from the
    stored raw vectors otherwise): those scores must be the whitened ones an unfiltered search gives."""
    docs = [{**d, "metadata": {"n": i % 3}} for i, d in enumerate(DOCS)]
    Index.build(tmp_path / "idx", docs, model=tiny_model, whitening="on", index_type=kind)
    index = Index.open(tmp_path / "idx")
    expected = expected_scores(index, QUERY)
    searcher = Searcher(index)
    cases = [({"n": 1}, lambda n: n == 1), ({"n": {"$in": [0, 2]}}, lambda n: n in (0, 2)),
             ({"n": {"$exists": True}}, lambda n: True)]
    for where, keep in cases:
        allowed = {d["id"] for d in docs if keep(d["metadata"]["n"])}
        hits = searcher.search(QUERY, k=3, where=where)
        assert {h.id for h in hits} <= allowed
        assert_hits([(h.id, h.score) for h in hits], {i: s for i, s in expected.items() if i in allowed})
