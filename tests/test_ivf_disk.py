"""``ivf-disk``: an IVF index whose lists stay in a memory-mapped file, built by merging shards,
with later commits held in an in-memory overlay until they are compacted into a new base."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import index.ann.ivf_disk as ivf_disk
from cli import cli
from index import Index
from index.ann.ivf_disk import IVFDiskIndex, data_file
from index.ann.registry import SearchSettings, build, load
from index.errors import SemsearchError
from index.storage.deltas import delta_files
from index.storage.generations import data_files, vector_files
from search import Searcher

D = 32


def clustered(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((40, D)).astype(np.float32)
    x = centers[rng.integers(0, 40, n)] + 0.4 * rng.standard_normal((n, D)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def batches_of(ids, x, size=700):
    return lambda: ((ids[i:i + size], x[i:i + size]) for i in range(0, len(ids), size))


def exact(x, ids, queries, k):
    return ids[np.argsort(-(queries @ x.T), axis=1, kind="stable")[:, :k]]


@pytest.fixture
def vectors():
    x = clustered(6000)
    ids = np.arange(6000, dtype=np.int64) * 5 + 3  # ids are not positions
    return ids, x


def every_list(index) -> SearchSettings:
    return SearchSettings(nprobe=index.nlist)


def test_built_from_merged_shards_it_answers_like_exact_search(vectors, tmp_path, monkeypatch, capfd):
    ids, x = vectors
    monkeypatch.setattr(ivf_disk, "SHARD", 1000)  # six shards merged into one file
    built = build("ivf-disk", D, len(ids), batches_of(ids, x), workdir=tmp_path)
    assert isinstance(built, IVFDiskIndex) and built.ntotal == len(ids)
    assert sorted(p.name for p in tmp_path.iterdir())[0].startswith(".vectors-build-")  # no shard left
    assert len(list(tmp_path.iterdir())) == 1
    built.save(tmp_path / "vectors-4.faiss")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vectors-4.faiss", "vectors-4.ivfdata"]
    assert (tmp_path / "vectors-4.faiss").stat().st_size < (tmp_path / "vectors-4.ivfdata").stat().st_size / 10
    back = load(tmp_path / "vectors-4.faiss")
    assert back.kind == "ivf-disk" and back.lists.read_only and back.ntotal == len(ids)
    assert sorted(back.ids().tolist()) == sorted(ids.tolist())
    queries = x[:30]
    _, got = back.search(queries, 10, settings=every_list(back))
    assert (got == exact(x, ids, queries, 10)).mean() > 0.99  # every list probed: exact (up to float ties)
    _, default = back.search(queries, 10)
    assert (default[:, 0] == ids[:30]).all()
    out, _ = capfd.readouterr()
    assert out == ""  # FAISS's "resizing ..." lines never reach stdout


def test_changes_go_to_an_overlay_and_compact_into_a_new_base(vectors, tmp_path):
    ids, x = vectors
    build("ivf-disk", D, len(ids), batches_of(ids, x), workdir=tmp_path).save(tmp_path / "vectors-1.faiss")
    base = load(tmp_path / "vectors-1.faiss")
    data_bytes = data_file(tmp_path / "vectors-1.faiss").read_bytes()
    new = clustered(50, seed=9)
    new_ids = np.arange(10**6, 10**6 + 50, dtype=np.int64)
    base.add(new_ids, new)
    assert base.remove(ids[:20]) == 20 and base.remove(ids[:20]) == 0  # removed once
    assert base.remove(new_ids[:5]) == 5
    assert base.ntotal == len(ids) - 20 + 45
    live_ids = np.concatenate([ids[20:], new_ids[5:]])
    live = np.concatenate([x[20:], new[5:]])
    assert sorted(base.ids().tolist()) == sorted(live_ids.tolist())
    queries = np.concatenate([x[:25], new[:10]])
    _, got = base.search(queries, 10, settings=every_list(base))
    want = exact(live, live_ids, queries, 10)
    assert (got == want).mean() > 0.99
    # A filter applies to both parts.
    allowed = np.concatenate([ids[::50], new_ids[::3]])
    _, got = base.search(queries, 5, allowed=allowed, settings=every_list(base))
    assert np.isin(got[got >= 0], allowed).all() and not np.isin(got, ids[:20]).any()
    assert data_file(tmp_path / "vectors-1.faiss").read_bytes() == data_bytes  # the mapped base never changes
    # Compaction: one new base with the overlay merged and the removed ids gone.
    base.save(tmp_path / "vectors-2.faiss")
    assert base.overlay.ntotal == 0 and len(base.removed) == 0 and base.ntotal == len(live_ids)
    again = load(tmp_path / "vectors-2.faiss")
    assert sorted(again.ids().tolist()) == sorted(live_ids.tolist())
    _, got2 = again.search(queries, 10, settings=every_list(again))
    assert (got2 == want).mean() > 0.99


def test_a_truncated_data_file_is_refused_not_mapped(vectors, tmp_path):
    ids, x = vectors
    build("ivf-disk", D, len(ids), batches_of(ids, x), workdir=tmp_path).save(tmp_path / "vectors-1.faiss")
    data = data_file(tmp_path / "vectors-1.faiss")
    with open(data, "r+b") as f:
        f.truncate(data.stat().st_size // 2)
    with pytest.raises(SemsearchError, match="truncated"):
        load(tmp_path / "vectors-1.faiss")
    data.unlink()  # without its data file the header is not a readable index
    with pytest.raises(SemsearchError):
        load(tmp_path / "vectors-1.faiss")


# --- through the index: the writer, readers, check and repair --------------------------------
WORDS = "the a of to and in bank river money boat sea pear fruit fox dog cat quick brown lazy over".split()


def docs(n: int, prefix: str = "d", seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"id": f"{prefix}{i}", "text": " ".join(rng.choice(WORDS, 6)) + f" {prefix} {i}"} for i in range(n)]


def vector_file_names(path) -> set[str]:
    return {p.name for p in [*vector_files(path).values(), *data_files(path).values(), *delta_files(path).values()]}


@pytest.fixture
def disk_index(tiny_model, tmp_path):
    path = tmp_path / "idx"
    with Index.create(path, model=tiny_model, index_type="ivf-disk") as index:
        index.add(docs(800))
    return path


def test_an_index_on_disk_takes_adds_and_deletes_and_answers_like_a_flat_one(disk_index, tiny_model, tmp_path):
    flat = tmp_path / "flat"
    with Index.create(flat, model=tiny_model) as index:
        index.add(docs(800))
    with Index.open(disk_index) as index:
        assert index.vectors.kind == "ivf-disk"
        (generation,) = data_files(disk_index)
        index.add(docs(5, prefix="n", seed=1))
        index.delete(["d3", "d7"])
    names = vector_file_names(disk_index)
    assert f"vectors-{generation}.ivfdata" in names and sum(n.endswith(".delta") for n in names) == 2
    with Index.open(flat) as index:
        index.add(docs(5, prefix="n", seed=1))
        index.delete(["d3", "d7"])
    questions = ["bank river money", "quick brown fox n 3", "pear fruit d 9", "boat sea lazy dog"]
    on_disk, in_memory = Searcher(disk_index, nprobe=10_000), Searcher(flat)
    for q in questions:
        a, b = on_disk.search(q, k=5), in_memory.search(q, k=5)
        assert [h.id for h in a] == [h.id for h in b]
        assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-5)
    assert not {"d3", "d7"} & {h.id for q in questions for h in on_disk.search(q, k=50)}
    with Index.open(disk_index) as index:
        report = index.check()
        assert report.ok, report.problems
        assert index.info().vector_index.startswith("ivf-disk")


def test_commits_compact_into_a_new_base_and_old_files_go(disk_index, monkeypatch):
    monkeypatch.setattr(IVFDiskIndex, "max_delta_bytes", 8_000)  # a few one-document deltas
    (first,) = data_files(disk_index)
    with Index.open(disk_index) as index:
        for i in range(12):
            index.add(docs(1, prefix=f"x{i}-", seed=i))
    (last,) = data_files(disk_index)
    assert last > first  # a new base with its own data file, the old one removed
    names = vector_file_names(disk_index)
    assert names == {f"vectors-{last}.faiss", f"vectors-{last}.ivfdata",
                     *(n for n in names if n.endswith(".delta"))}
    with Index.open(disk_index) as index:
        assert index.check().ok and index.vectors.ntotal == 812
        assert index.vectors.overlay.ntotal == len([n for n in names if n.endswith(".delta")])
    hits = Searcher(disk_index, nprobe=10_000).search("x11- 0", k=3)
    assert hits[0].id == "x11-0"


def test_a_damaged_data_file_is_reported_and_repaired(disk_index):
    (data,) = data_files(disk_index).values()
    with open(data, "r+b") as f:
        f.truncate(100)
    with Index.open(disk_index) as index:
        report = index.check()
        assert not report.ok and any("truncated" in p for p in report.problems)
        index.repair()
        assert index.check().ok and index.vectors.kind == "ivf-disk" and index.vectors.ntotal == 800


def test_rebuild_into_ivf_disk_from_the_cli(tiny_model, tmp_path):
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in docs(700)))
    path = tmp_path / "idx"
    runner = CliRunner()
    result = runner.invoke(cli, ["index", "build", str(corpus), "--index", str(path), "--model", tiny_model])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["index", "rebuild", "--index", str(path), "--index-type", "ivf-disk"])
    assert result.exit_code == 0, result.output
    assert len(data_files(path)) == 1
    result = runner.invoke(cli, ["index", "info", "--index", str(path), "--json"])
    assert result.exit_code == 0 and json.loads(result.output)["vector_index"].startswith("ivf-disk")
    result = runner.invoke(cli, ["query", "bank river d 5", "--index", str(path), "-k", "3", "--json"])
    assert result.exit_code == 0, result.output


def test_a_full_disk_while_compacting_changes_nothing(disk_index, monkeypatch):
    import faiss

    class FullDisk:  # FAISS reports a failed ftruncate of the new data file as a RuntimeError
        def __init__(self, *args):
            pass

        def merge_from_multiple(self, *args):
            raise RuntimeError("Error in void faiss::OnDiskInvertedLists::update_totsize(size_t) at "
                               "OnDiskInvertedLists.cpp:313: ftruncate failed: No space left on device")

    before = vector_file_names(disk_index)
    monkeypatch.setattr(IVFDiskIndex, "max_delta_bytes", 0)  # the next commit compacts
    monkeypatch.setattr(faiss, "OnDiskInvertedLists", FullDisk)
    with pytest.raises(SemsearchError, match="No space left on device"):
        with Index.open(disk_index) as index:
            index.add(docs(1, prefix="full", seed=3))
    monkeypatch.undo()
    assert vector_file_names(disk_index) == before
    assert not [p for p in disk_index.iterdir() if p.name.startswith(".vectors-")]
    with Index.open(disk_index) as index:
        assert index.check().ok and index.vectors.ntotal == 800
        assert "full0" not in {h.id for h in Searcher(index).search("full 0", k=5)}


THREADED = r"""
import sys, threading
import numpy as np
sys.path.insert(0, sys.argv[1])
import index.ann.ivf_disk as ivf_disk
from index.ann.registry import build

ivf_disk.SHARD = 500
rng = np.random.default_rng(0)
x = rng.standard_normal((4000, 32)).astype(np.float32)
x /= np.linalg.norm(x, axis=1, keepdims=True)
ids = np.arange(4000, dtype=np.int64)
stop, printed = threading.Event(), [0]

def chatter():  # another thread of a host program, printing all along
    while not stop.is_set() or printed[0] < 200:
        print(f"line {printed[0]}", flush=True)
        printed[0] += 1

thread = threading.Thread(target=chatter)
thread.start()
built = build("ivf-disk", 32, len(ids), lambda: ((ids[i:i + 700], x[i:i + 700]) for i in range(0, 4000, 700)),
              workdir=sys.argv[2])
built.save(__import__("pathlib").Path(sys.argv[2]) / "vectors-1.faiss")
built.add(ids[:100] + 10_000, x[:100])
built.save(__import__("pathlib").Path(sys.argv[2]) / "vectors-2.faiss")  # merges base and overlay again
stop.set()
thread.join()
print(f"printed {printed[0]}", flush=True)
"""


def test_another_threads_output_is_never_lost_while_faiss_grows_a_data_file(tmp_path):
    """Only C's stdout stream is silenced during the merges, not file descriptor 1 of the process."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", THREADED, str(root), str(tmp_path)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    total = int(lines[-1].split()[1])
    assert lines[:-1] == [f"line {n}" for n in range(total)]  # every line, in order, none torn
    assert "resizing" not in done.stdout
