"""Writes cost what they change: a commit writes a delta file, and a new base only when due."""

from __future__ import annotations

import numpy as np
import pytest

import index.options as options_module
from index import Index
from index.storage.deltas import Delta, delta_files, load_delta
from index.storage.generations import base_generation, chain_names, vector_files
from search import Searcher

WORDS = "the a of to and in bank river money boat sea pear fruit fox dog cat quick brown lazy over".split()


def docs(n: int, prefix: str = "d", seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"id": f"{prefix}{i}", "text": " ".join(rng.choice(WORDS, 6)) + f" {prefix} {i}"} for i in range(n)]


def files(path) -> set[str]:
    return {p.name for p in [*vector_files(path).values(), *delta_files(path).values()]}


def committed_chain(path) -> list[str]:
    with Index.open(path) as index:
        generation = index.store.generation()
        return chain_names(base_generation(index.store.get_info(), generation), generation)


def agrees(path) -> None:
    """The vectors a reader loads are exactly the stored ones."""
    with Index.open(path) as index:
        rows = {int(i) for ids, _ in index.store.iter_vectors(index.config["dimension"]) for i in ids}
        assert set(index.vectors.ids().tolist()) == rows and index.vectors.ntotal == len(rows)


@pytest.fixture
def big(tiny_model, tmp_path):
    """An index of 400 documents in one base file."""
    path = tmp_path / "idx"
    with Index.create(path, model=tiny_model) as index:
        index.add(docs(400))
    assert files(path) == set(committed_chain(path)) and len(files(path)) == 1
    return path


def test_a_small_commit_writes_a_delta_not_the_whole_index(big):
    (base,) = vector_files(big).values()
    base_bytes, base_mtime = base.stat().st_size, base.stat().st_mtime_ns
    with Index.open(big) as index:
        index.add([{"id": "new", "text": "a boat on the sea new"}])
    chain = committed_chain(big)
    assert len(chain) == 2 and chain[1].endswith(".delta") and files(big) == set(chain)
    assert base.stat().st_mtime_ns == base_mtime  # the base was not rewritten
    delta = big / chain[1]
    assert delta.stat().st_size < base_bytes / 20
    content = load_delta(delta, 32)
    assert len(content["ids"]) == 1 and len(content["removed"]) == 0
    agrees(big)
    assert Searcher(big).search("a boat on the sea new", k=1)[0].id == "new"


def test_updates_and_deletes_are_deltas_too(big):
    with Index.open(big) as index:
        index.add([{"id": "d1", "text": "an updated text about fruit"}])
        index.delete(["d2", "d3"])
    chain = committed_chain(big)
    update, delete = (load_delta(big / name, 32) for name in chain[1:])
    assert len(update["removed"]) == 1 and len(update["ids"]) == 1
    assert len(delete["removed"]) == 2 and len(delete["ids"]) == 0
    agrees(big)
    hits = Searcher(big).search("the bank of the river d 2", k=400)
    assert {"d2", "d3"}.isdisjoint(h.id for h in hits)


def test_deltas_are_compacted_into_a_new_base_when_they_outgrow_it(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setattr(options_module, "COMMIT_EVERY", 10)
    path = tmp_path / "idx"
    seen_bases = set()
    with Index.create(path, model=tiny_model) as index:
        for start in range(0, 300, 10):
            index.add(docs(300)[start:start + 10])
            chain = committed_chain(path)
            seen_bases.add(chain[0])
            assert files(path) == set(chain)  # nothing else is left behind
            base_bytes = (path / chain[0]).stat().st_size
            delta_bytes = sum((path / name).stat().st_size for name in chain[1:])
            assert delta_bytes <= 1.5 * base_bytes
    assert 3 <= len(seen_bases) <= 12  # compactions happened, a few (the base grows geometrically)
    agrees(path)


def test_a_damaged_delta_is_never_served_and_a_writer_mends_it(big):
    with Index.open(big) as index:
        index.add([{"id": "new", "text": "a boat on the sea new"}])
    delta = big / committed_chain(big)[1]
    delta.write_bytes(b"garbage")
    agrees(big)  # rebuilt from the stored vectors
    report = Index.open(big).check()
    assert not report.ok and any("damaged" in p for p in report.problems)
    Index.open(big).repair()
    assert Index.open(big).check().ok and len(committed_chain(big)) == 1 and files(big) == set(committed_chain(big))


def test_a_missing_delta_is_reported(big):
    with Index.open(big) as index:
        index.add([{"id": "new", "text": "a boat on the sea new"}])
    (big / committed_chain(big)[1]).unlink()
    agrees(big)
    report = Index.open(big).check()
    assert not report.ok and "missing" in report.problems[0]


def test_a_delta_of_a_generation_that_never_committed_is_ignored_and_removed(big):
    with Index.open(big) as index:
        generation = index.store.generation()
        stray = Delta()
        stray.add(np.array([999_999], dtype=np.int64), np.ones((1, 32), dtype=np.float32))
        stray.save(big / f"vectors-{generation + 1}.delta", 32)
    agrees(big)  # a reader does not load it
    with Index.open(big) as index:
        index.add([{"id": "new", "text": "a boat on the sea new"}])  # the next writer replaces it with its own
    agrees(big)
    assert 999_999 not in Index.open(big).vectors.ids().tolist()


def test_an_index_from_before_deltas_starts_its_chain_at_its_file(big):
    with Index.open(big) as index:  # what an index written before deltas records
        with index.store.transaction():
            index.store.conn.execute("DELETE FROM info WHERE key = 'vectors_base'")
        generation = index.store.generation()
    with Index.open(big) as index:
        index.add([{"id": "new", "text": "a boat on the sea new"}])
        assert index.store.get_info()["vectors_base"] == generation
    assert committed_chain(big) == [f"vectors-{generation}.faiss", f"vectors-{generation + 1}.delta"]
    agrees(big)


def test_a_typed_index_takes_deltas_through_the_writer(tiny_model, tmp_path):
    path = tmp_path / "idx"
    with Index.create(path, model=tiny_model, index_type="hnsw") as index:
        index.add(docs(400))
        index.add([{"id": "new", "text": "a boat on the sea new"}])
        index.delete(["d5"])
    chain = committed_chain(path)
    assert len(chain) == 3 and Index.open(path).vectors.kind == "hnsw"
    agrees(path)
    hits = Searcher(path).search("a boat on the sea new", k=5)
    assert hits[0].id == "new" and "d5" not in {h.id for h in hits}


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf", "ivfpq", "ivf-disk"])
def test_every_vector_type_reads_its_base_and_deltas(kind, tmp_path):
    """Synthetic vectors, enough to train the approximate types."""
    from index.ann import registry
    from index.storage.generations import read_vectors

    rng = np.random.default_rng(0)
    dim = 64
    n = max(1000, registry.backend(kind).min_training)
    base = rng.standard_normal((n, dim)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    ids = np.arange(n, dtype=np.int64)
    built = registry.build(kind, dim, n, lambda: iter([(ids, base)]))
    assert built.kind == kind
    built.save(tmp_path / "vectors-1.faiss")
    new = rng.standard_normal((3, dim)).astype(np.float32)
    new /= np.linalg.norm(new, axis=1, keepdims=True)
    added = Delta()
    added.add(np.array([n, n + 1, n + 2], dtype=np.int64), new)
    added.save(tmp_path / "vectors-2.delta", dim)
    removed = Delta()
    removed.remove([5, 6])
    removed.save(tmp_path / "vectors-3.delta", dim)
    back = read_vectors(tmp_path, 1, 3)
    assert back.kind == kind and back.ntotal == n + 1
    assert set(back.ids().tolist()) == (set(range(n + 3)) - {5, 6})
    scores, found = back.search(new, 1)
    assert found[:, 0].tolist() == [n, n + 1, n + 2]
    _, found = back.search(base[[5, 6]], 3)
    assert not {5, 6} & set(found.ravel().tolist())
    assert read_vectors(tmp_path, 1, 2).ntotal == n + 3  # an earlier generation stops at its delta


def test_a_full_disk_while_writing_a_delta_changes_nothing(big, monkeypatch):
    import errno

    import index.storage.deltas as deltas_module
    from index.errors import SemsearchError

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    before = committed_chain(big)
    monkeypatch.setattr(deltas_module, "open", no_space, raising=False)
    with pytest.raises(SemsearchError, match="No space left on device"):
        with Index.open(big) as index:
            index.add([{"id": "new", "text": "a boat on the sea new"}])
    monkeypatch.undo()
    assert committed_chain(big) == before and files(big) == set(before)
    assert not list(big.glob(".*tmp*"))
    assert "new" not in Index.open(big).store.existing(["new"])
    with Index.open(big) as index:
        assert index.add([{"id": "new", "text": "a boat on the sea new"}]).added == 1
    agrees(big)
