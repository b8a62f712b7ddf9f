"""`index check` finds every disagreement; `index repair` mends it without losing a document."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from cli import cli
from index import Index
from index.storage.generations import vector_files
from search import Searcher

DOCS = [{"id": f"d{i}", "text": f"the fox number {i} jumps over the dog"} for i in range(8)]


@pytest.fixture
def idx(tiny_model, tmp_path):
    index = Index.create(tmp_path / "idx", model=tiny_model)
    index.add(DOCS)
    return index


def test_a_healthy_index_checks_ok(idx):
    report = idx.check(sample=100)
    assert report.ok and report.problems == []
    assert (report.documents, report.passages, report.vectors, report.sampled) == (8, 8, 8, 8)
    assert report.min_cosine > 0.9999


def test_missing_faiss_file_is_reported_then_repaired(idx, tmp_path):
    for f in vector_files(tmp_path / "idx").values():
        f.unlink()
    report = Index.open(tmp_path / "idx").check()
    assert not report.ok and "missing" in report.problems[0]
    actions = Index.open(tmp_path / "idx").repair().actions
    assert any("rewrote" in a for a in actions)
    assert Index.open(tmp_path / "idx").check().ok


def test_orphan_passages_and_bare_documents(idx, tmp_path):
    conn = idx.store.conn
    conn.execute("DELETE FROM passages WHERE document_id = 'd3'")  # d3 can no longer be found
    conn.execute("UPDATE passages SET document_id = 'ghost' WHERE document_id = 'd5'")  # d5 too, and an orphan
    report = Index.open(tmp_path / "idx").check()
    assert any("belong to no document" in p for p in report.problems)
    assert any("2 document(s) have no passages" in p for p in report.problems)
    repaired = Index.open(tmp_path / "idx")
    actions = repaired.repair().actions
    assert any("removed 1 passage" in a for a in actions) and any("re-encoded 2 document" in a for a in actions)
    assert Index.open(tmp_path / "idx").check(sample=100).ok
    searcher = Searcher(tmp_path / "idx")
    for doc_id in ("d3", "d5"):
        hit = searcher.search(DOCS[int(doc_id[1])]["text"], k=1)[0]
        assert hit.id == doc_id and hit.score == pytest.approx(1.0, abs=1e-4)
    assert Index.open(tmp_path / "idx").store.counts() == (8, 8)


def test_a_stored_vector_that_differs_from_a_fresh_encoding(idx, tmp_path):
    pid = idx.store.passage_ids_of(["d2"])[0]
    idx.store.conn.execute("UPDATE passages SET vector = ? WHERE id = ?", (np.ones(32, np.float32).tobytes(), pid))
    report = Index.open(tmp_path / "idx").check(sample=100)
    assert any("differ from a fresh encoding" in p for p in report.problems)
    assert report.min_cosine < 0.9


def test_changed_model_weights_are_a_problem(index_of_a_changed_model):
    report = Index.open(index_of_a_changed_model).check()
    assert any("no longer matches" in p for p in report.problems)


def test_interrupted_rebuild_leftovers_are_noted_and_dropped(idx, tmp_path):
    idx.store.start_next_passages()
    report = Index.open(tmp_path / "idx").check()
    assert report.ok and any("interrupted rebuild" in n for n in report.notes)
    Index.open(tmp_path / "idx").repair()
    assert "passages_next" not in Index.open(tmp_path / "idx").store.db.table_names()


def test_cli_check_exit_codes(idx, tmp_path):
    runner = CliRunner()
    ok = runner.invoke(cli, ["index", "check", "--index", str(tmp_path / "idx")])
    assert ok.exit_code == 0 and ok.output.strip().endswith("ok")
    for f in vector_files(tmp_path / "idx").values():
        f.write_bytes(b"\0" * 10)
    bad = runner.invoke(cli, ["index", "check", "--index", str(tmp_path / "idx")])
    assert bad.exit_code == 1 and "damaged" in bad.output and "repair" in bad.output
    fixed = runner.invoke(cli, ["index", "repair", "--index", str(tmp_path / "idx")])
    assert fixed.exit_code == 0 and "rewrote" in fixed.output
    assert runner.invoke(cli, ["index", "check", "--index", str(tmp_path / "idx")]).exit_code == 0
