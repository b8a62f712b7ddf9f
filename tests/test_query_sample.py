"""Sample queries in the whitening fit: recorded texts (never labels), a refit, and `index fit-queries`."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cli import cli
from index import Index
from index.errors import InputError, SemsearchError
from index.storage.query_sample import read_queries, record_queries
from index.storage import whitened
from search.searcher import Searcher

DOCS = [{"id": f"d{i}", "text": t} for i, t in enumerate(
    ["how do i reset my password", "the bank of the river", "where is my invoice", "a boat on the sea",
     "the quick brown fox jumps over the lazy dog", "interest rates rose again"])]
QUERIES = ["i forgot my login", "river side walk", "money back please", "i forgot my login"]


@pytest.fixture
def whitened_index(tiny_model, tmp_path):
    path = tmp_path / "idx"
    Index.create(path, model=tiny_model, whitening="on").add(DOCS)
    return path


def test_recorded_queries_refit_the_whitening_and_the_faiss_vectors_follow(whitened_index):
    index = Index.open(whitened_index)
    before = index.config[whitened.FIT]
    assert record_queries(index, QUERIES + ["  ", ""]) == 3
    index = Index.open(whitened_index)
    fit = index.config[whitened.FIT]
    assert index.config[whitened.QUESTIONS] == sorted(set(QUERIES)) and fit["questions"] == 3
    assert fit["sha256"] != before["sha256"] and "3 recorded questions" in fit["source"]
    hit = Searcher(index).search(DOCS[1]["text"], k=1)[0]
    assert hit.id == "d1" and hit.score == pytest.approx(1.0, abs=1e-4)
    assert CliRunner().invoke(cli, ["index", "check", "--index", str(whitened_index)]).exit_code == 0
    record_queries(index, list(reversed(QUERIES)))  # the same texts: nothing refitted
    assert Index.open(whitened_index).config[whitened.FIT]["sha256"] == fit["sha256"]
    assert record_queries(index, []) == 0  # cleared: the fit of the corpus and background again
    cleared = Index.open(whitened_index).config[whitened.FIT]
    assert cleared["questions"] == 0 and cleared["sha256"] == before["sha256"]


def test_an_index_that_does_not_whiten_is_refused_and_unchanged(tiny_model, tmp_path):
    index = Index.create(tmp_path / "raw", model=tiny_model, whitening="off")
    index.add(DOCS)
    before = dict(Index.open(tmp_path / "raw").config)
    with pytest.raises(SemsearchError, match="does not whiten"):
        record_queries(index, QUERIES)
    assert Index.open(tmp_path / "raw").config == before


def test_more_queries_than_kept_are_a_fixed_sample(whitened_index, monkeypatch):
    monkeypatch.setattr(whitened, "MAX_QUESTIONS", 2)
    index = Index.open(whitened_index)
    assert record_queries(index, QUERIES) == 2
    first = Index.open(whitened_index).config[whitened.QUESTIONS]
    assert set(first) <= set(QUERIES) and record_queries(index, list(reversed(QUERIES))) == 2
    assert Index.open(whitened_index).config[whitened.QUESTIONS] == first


def test_read_queries_takes_lines_or_jsonl_texts(tmp_path):
    lines = tmp_path / "q.txt"
    lines.write_text("first query\n\n  second query \n", encoding="utf-8")
    assert read_queries(lines) == ["first query", "second query"]
    beir = tmp_path / "q.jsonl"
    beir.write_text('{"_id": "1", "text": "a claim"}\n{"question": "a question", "faq_id": null}\n')
    assert read_queries(beir) == ["a claim", "a question"]
    other = tmp_path / "o.jsonl"
    other.write_text('{"id": 1, "ask": "asked", "text": "not this"}\n')
    assert read_queries(other, text_field="ask") == ["asked"]
    broken = tmp_path / "b.jsonl"
    broken.write_text('{"text": "fine"}\n{broken\n')
    with pytest.raises(InputError, match=r"b.jsonl:2: invalid JSON"):
        read_queries(broken)
    with pytest.raises(InputError, match=r"o.jsonl:1: no text field \(answer\)"):
        read_queries(other, text_field="answer")


def test_fit_queries_command(whitened_index, tmp_path):
    queries = tmp_path / "queries.jsonl"
    queries.write_text("".join(json.dumps({"_id": str(i), "text": q}) + "\n" for i, q in enumerate(QUERIES)))
    runner = CliRunner()
    done = runner.invoke(cli, ["index", "fit-queries", str(queries), "--index", str(whitened_index)])
    assert done.exit_code == 0, done.output
    assert "3 sample queries recorded" in done.stderr and "3 recorded questions" in done.stderr
    info = json.loads(runner.invoke(cli, ["index", "info", "--index", str(whitened_index), "--json"]).stdout)
    assert "3 recorded questions" in json.dumps(info)
    cleared = runner.invoke(cli, ["index", "fit-queries", "--clear", "--index", str(whitened_index)])
    assert cleared.exit_code == 0 and "0 sample queries recorded" in cleared.stderr
    for args in ([], [str(queries), "--clear"]):
        wrong = runner.invoke(cli, ["index", "fit-queries", *args, "--index", str(whitened_index)])
        assert wrong.exit_code == 1 and "give a QUERIES file, or --clear" in wrong.output
        assert "Traceback" not in wrong.output
