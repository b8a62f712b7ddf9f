"""Encoding on Ray (``--engine ray``): the same index as the local path, resumable, unchanged texts skipped.

One local Ray (2 CPUs) is shared by the module. The tiny random BERT is
loaded by each actor from the index's recorded configuration; the writer in
this process commits. Vectors are compared with the local path's to 1e-5.
"""

from __future__ import annotations

import json
import logging
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import require
from test_shards import stored  # (document id, order) -> (passage, vector)

import index.options as options_module
from cli import cli
from index import Index
from index.distributed.ray_engine import MISSING_RAY, RayEngine, RaySettings, import_ray
from index.errors import SemsearchError

pytestmark = pytest.mark.slow

LONG = " ".join(f"number {i} the quick brown fox" for i in range(40))  # several passages
DOCS = [{"id": f"d{i}", "text": f"document {i} about " + " ".join(["rivers", "banks", "배를", "boats"][: i % 4 + 1]),
         "metadata": {"n": i}} for i in range(14)]
DOCS[3]["text"] = LONG
DOCS[7]["text"] = "   "  # empty after stripping: skipped, as on the local path
DOCS += [{"id": "d1", "text": "d1 again, with another text", "metadata": {"again": True}},  # a later chunk
         {"id": "d2", "text": DOCS[2]["text"], "metadata": {"n": 2}}]  # repeated unchanged
FINAL = [d for d in {d["id"]: d for d in DOCS}.values() if d["text"].strip()]  # what the index holds


@pytest.fixture(scope="module")
def ray_local():
    ray = require("ray", "Ray is not installed (the ray extra)")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    yield ray
    ray.shutdown()


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(options_module, "COMMIT_EVERY", 4)


def bounded(fn, *args, seconds: float = 300, **kwargs):
    """``fn(*args, **kwargs)``, failing with TimeoutError if Ray does not finish it in time (a stuck
    actor pool then dies with the module's Ray at teardown)."""
    pool = ThreadPoolExecutor(1)
    try:
        return pool.submit(fn, *args, **kwargs).result(timeout=seconds)
    finally:
        pool.shutdown(wait=False)


class Crash(Exception):
    pass


def engine(**kw) -> RayEngine:
    return RayEngine(RaySettings(**{"actors": 2, "batch_documents": 3, **kw}))


def documents(index: Index) -> dict[str, tuple]:
    ids = [doc_id for rows in index.store.iter_documents() for doc_id, _ in rows]
    return index.store.documents(ids)


def assert_same_index(got: Index, want: Index) -> None:
    assert documents(got) == documents(want)
    a, b = stored(got), stored(want)
    assert a.keys() == b.keys() and len(a) > len(DOCS)
    for key in b:
        assert a[key][0] == b[key][0], key  # the passages: order, character span, text
        np.testing.assert_allclose(a[key][1], b[key][1], atol=1e-5, rtol=0)
    assert got.vectors.ntotal == want.vectors.ntotal == len(a)


def test_ray_builds_the_local_index(ray_local, tiny_model, tmp_path, small_chunks):
    local, local_result = Index.build(tmp_path / "local", DOCS, model=tiny_model)
    on_ray, ray_result = bounded(Index.build, tmp_path / "ray", DOCS, model=tiny_model, engine=engine())
    assert ray_result == local_result
    assert ray_result.duplicates == ["d1", "d2"] and ray_result.skipped_empty == ["d7"]
    assert ray_result.unchanged == 1 and ray_result.updated == 1  # the repeats, across chunks, as locally
    assert_same_index(on_ray, local)
    assert on_ray.config["complete"] is True


def test_a_second_run_encodes_only_changed_texts(ray_local, tiny_model, tmp_path, small_chunks):
    local, _ = Index.build(tmp_path / "local", DOCS, model=tiny_model)
    on_ray, _ = bounded(Index.build, tmp_path / "ray", DOCS, model=tiny_model, engine=engine())
    generation = on_ray.config["generation"]
    again = bounded(on_ray.add, FINAL, engine=engine())  # nothing to encode: no Ray work, no new generation
    assert (again.added, again.updated, again.passages) == (0, 0, 0)
    assert on_ray.config["generation"] == generation
    changed = [dict(d) for d in FINAL[:6]]
    changed[0]["text"] = "a changed text about rivers"
    changed[4]["metadata"] = {"new": "metadata"}
    got, want = bounded(on_ray.add, changed, engine=engine()), local.add(changed)
    assert got == want and (got.updated, got.metadata_updated, got.unchanged) == (1, 1, 4)
    assert_same_index(on_ray, local)
    # A document changed in one chunk and back as stored in a later one: the later chunk is planned on
    # Ray before the earlier one commits, yet it must end as stored, as locally (the writer re-checks).
    by_id = {d["id"]: d for d in FINAL}
    flip = [{**by_id["d5"], "text": "d5 changed for a moment"}, {**by_id["d6"], "metadata": {"briefly": 1}},
            by_id["d8"], by_id["d9"], by_id["d10"], by_id["d11"], by_id["d5"], by_id["d6"]]
    got, want = bounded(on_ray.add, flip, engine=engine()), local.add(flip)
    assert got == want and (got.updated, got.metadata_updated, got.unchanged) == (2, 2, 4)
    assert_same_index(on_ray, local)
    assert documents(on_ray)["d5"] == (by_id["d5"]["text"], by_id["d5"]["metadata"])


def test_an_interrupted_ray_build_resumes(ray_local, tiny_model, tmp_path, small_chunks):
    docs = DOCS[:14]
    committed: list[str] = []

    def crash_after_the_first_commit(ids):
        committed.extend(ids)
        raise Crash

    with pytest.raises(Crash):
        bounded(Index.build, tmp_path / "ray", docs, model=tiny_model, engine=engine(),
                on_commit=crash_after_the_first_commit)
    partial = Index.open(tmp_path / "ray")
    assert partial.config["complete"] is False and partial.store.counts()[0] == len(committed) == 4
    partial.close()
    resumed, result = bounded(Index.build, tmp_path / "ray", docs, model=tiny_model, engine=engine())
    assert result.unchanged == 4 and result.added == len(docs) - 4 - len(result.skipped_empty)
    assert resumed.config["complete"] is True
    local, _ = Index.build(tmp_path / "local", docs, model=tiny_model)
    assert_same_index(resumed, local)


def test_actors_refuse_a_model_that_is_not_the_recorded_one(ray_local, tiny_model, tmp_path):
    index = Index.create(tmp_path / "idx", model=tiny_model)
    with index.store.transaction():
        index.store.set_info({"model_fingerprint": "0123456789abcdef"})
    with pytest.raises(SemsearchError, match="no longer matches index"):
        bounded(index.add, DOCS[:3], engine=engine())
    assert index.store.counts() == (0, 0)


def test_the_cli_builds_a_sharded_index_on_ray(ray_local, tiny_model, tmp_path):
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps({"_id": d["id"], "text": d["text"]}) + "\n" for d in DOCS[:10]),
                      encoding="utf-8")
    runner = CliRunner()
    for name, extra in (("local", []), ("ray", ["--engine", "ray", "--ray-actors", "2"])):
        result = bounded(runner.invoke, cli, ["index", "build", str(source), "--index", str(tmp_path / name),
                                              "--shards", "2", "--model", tiny_model, "-q", *extra])
        assert result.exit_code == 0, result.output
    from index.distributed.shards import ShardedIndex

    local, on_ray = ShardedIndex.open(tmp_path / "local"), ShardedIndex.open(tmp_path / "ray")
    for a, b in zip(on_ray.indexes, local.indexes):
        assert_same_index_loose(a, b)


def assert_same_index_loose(got: Index, want: Index) -> None:
    a, b = stored(got), stored(want)
    assert a.keys() == b.keys() and a
    for key in b:
        assert a[key][0] == b[key][0]
        np.testing.assert_allclose(a[key][1], b[key][1], atol=1e-5, rtol=0)


def test_without_ray_the_engine_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(SemsearchError) as info:
        import_ray()
    assert str(info.value) == MISSING_RAY
    source = tmp_path / "docs.jsonl"
    source.write_text(json.dumps({"_id": "a", "text": "x"}) + "\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["index", "build", str(source), "--index", str(tmp_path / "i"), "--engine", "ray"])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: {MISSING_RAY}"
    assert not (tmp_path / "i").exists()
