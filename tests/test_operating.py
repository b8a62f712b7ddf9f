"""Operating an index (#19): reading documents back, deleting by file or filter, backup and
restore while a writer commits, space after deletes, and what the server says about itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cli import cli
from index import Index
from index.distributed.shards import ShardedIndex
from index.ingest.passages import EncodedDocument
from index.records import Passage
from index.storage import space
from index.storage.generations import Generations

ROOT = Path(__file__).resolve().parents[1]


def corpus(n: int = 30) -> list[dict]:
    return [{"id": f"doc-{i:03d}", "text": f"document {i} about {['rivers', 'banks', 'trees'][i % 3]} and more",
             "metadata": {"topic": ["water", "money", "wood"][i % 3], "n": i}} for i in range(n)]


@pytest.fixture(scope="module")
def indexes(tiny_model, tmp_path_factory):
    """A plain and a sharded index over the same documents."""
    import index.options as options

    saved = options.DEFAULT_PRECISION, options.DEFAULT_BACKEND
    options.DEFAULT_PRECISION, options.DEFAULT_BACKEND = "fp32", "torch"
    try:
        root = tmp_path_factory.mktemp("operating")
        plain, _ = Index.build(root / "plain", corpus(), model=tiny_model)
        sharded, _ = ShardedIndex.build(root / "sharded", corpus(), shards=3, model=tiny_model)
    finally:
        options.DEFAULT_PRECISION, options.DEFAULT_BACKEND = saved
    yield {"plain": plain, "sharded": sharded}
    plain.close()
    sharded.close()


def stored(docs) -> list[tuple]:
    return [(d.id, d.text, d.metadata) for d in docs]


@pytest.mark.parametrize("kind", ["plain", "sharded"])
def test_get_list_and_page_read_back_what_was_added(indexes, kind):
    index = indexes[kind]
    expected = sorted((d["id"], d["text"], d["metadata"]) for d in corpus())
    assert [d.id for d in index.get(["doc-007", "nope", "doc-002"])] == ["doc-007", "doc-002"]
    everything = list(index.documents())
    assert stored(everything) == expected
    by_offset = [d for start in range(0, 30, 7) for d in index.documents(limit=7, offset=start)]
    assert stored(by_offset) == expected
    pages, after = [], None
    while True:
        page = list(index.documents(limit=4, after=after))
        if not page:
            break
        pages += page
        after = page[-1].id
    assert stored(pages) == expected
    water = [d.id for d in index.documents(where={"topic": "water"})]
    assert water == [e[0] for e in expected if e[2]["topic"] == "water"]
    assert [d.id for d in index.documents(where={"n": "4"})] == ["doc-004"]
    wood = [e[0] for e in expected if e[2]["topic"] == "wood"]
    assert [d.id for d in index.documents(where={"topic": "wood"}, offset=2, limit=2)] == wood[2:4]
    with_vectors = index.get(["doc-005"], vectors=True)[0]
    vector = np.asarray(with_vectors.passages[0]["vector"], dtype=np.float32)
    assert vector.shape == (int(index.config["dimension"]),) and abs(float(vector @ vector) - 1) < 1e-4


def test_a_listing_stays_on_one_snapshot_while_a_writer_commits(tmp_path, tiny_model):
    index, _ = Index.build(tmp_path / "ix", corpus(), model=tiny_model)
    stream = index.documents()
    first = next(stream)
    index.delete([f"doc-{i:03d}" for i in range(10, 30)])
    rest = list(stream)
    assert len([first, *rest]) == 30  # the listing's snapshot predates the delete
    assert len(list(index.documents())) == 10


@pytest.mark.parametrize("kind", ["plain", "sharded"])
def test_export_then_build_round_trips(indexes, kind, tmp_path, tiny_model):
    runner = CliRunner()
    source = indexes[kind]
    done = runner.invoke(cli, ["index", "export", "--index", str(source.path)])
    assert done.exit_code == 0, done.output
    exported = tmp_path / "docs.jsonl"
    exported.write_text(done.stdout, encoding="utf-8")
    built = runner.invoke(cli, ["index", "build", str(exported), "--index", str(tmp_path / "copy"),
                                "--model", tiny_model, "--quiet"])
    assert built.exit_code == 0, built.output
    with Index.open(tmp_path / "copy") as copy:
        assert stored(copy.documents()) == stored(source.documents())


def test_cli_get_list_and_delete_by_file_stdin_and_filter(tmp_path, tiny_model):
    runner = CliRunner()
    Index.build(tmp_path / "ix", corpus(), model=tiny_model)[0].close()
    at = ["--index", str(tmp_path / "ix")]
    got = runner.invoke(cli, ["index", "get", "doc-001", "doc-002", *at])
    assert got.exit_code == 0 and [json.loads(l)["id"] for l in got.stdout.splitlines()] == ["doc-001", "doc-002"]
    missing = runner.invoke(cli, ["index", "get", "doc-001", "nope", *at])
    assert missing.exit_code == 1 and "not in the index: nope" in missing.output and "Traceback" not in missing.output
    listed = runner.invoke(cli, ["index", "list", "--limit", "3", "--after", "doc-010", "--json", *at])
    assert [json.loads(l)["id"] for l in listed.stdout.splitlines()] == ["doc-011", "doc-012", "doc-013"]
    both = runner.invoke(cli, ["index", "list", "--offset", "2", "--after", "doc-010", *at])
    assert both.exit_code == 1 and "not both" in both.output
    ids = tmp_path / "ids.txt"
    ids.write_text("doc-001\n\ndoc-002\nnot-there\n", encoding="utf-8")
    done = runner.invoke(cli, ["index", "delete", "--ids-from", str(ids), *at])
    assert done.exit_code == 0, done.output
    done = runner.invoke(cli, ["index", "delete", "--ids-from", "-", *at], input="doc-003\n")
    assert done.exit_code == 0, done.output
    done = runner.invoke(cli, ["index", "delete", "--where", "topic=money", *at])
    assert done.exit_code == 0, done.output
    nothing = runner.invoke(cli, ["index", "delete", *at])
    assert nothing.exit_code != 0 and "give ids" in nothing.output
    with Index.open(tmp_path / "ix") as index:
        left = [d.id for d in index.documents()]
    assert left == [d["id"] for d in corpus() if d["metadata"]["topic"] != "money"
                    and d["id"] not in ("doc-001", "doc-002", "doc-003")]


WRITER = """
import os, sys
sys.path.insert(0, sys.argv[1])
import index.options as options
options.DEFAULT_PRECISION, options.DEFAULT_BACKEND = "fp32", "torch"
from index import Index
index = Index.open(sys.argv[2], wait=True)
for round in range(int(sys.argv[3])):  # bounded, and stopped early by the test's stop file
    index.add([{"id": f"w{round}-{i}", "text": f"written in round {round}, number {i}"} for i in range(4)])
    index.delete([f"w{round - 1}-0", f"w{round - 1}-1"])
    print(round, flush=True)
    if os.path.exists(sys.argv[4]):
        break
"""


def check_copy(folder: Path, generation: int) -> None:
    with Index.open(folder) as copy:
        assert copy.store.generation() == generation
        assert Generations(copy.store, copy.path).load() is True  # its vector files match its rows
        docs, passages = copy.store.counts()
        assert copy.info().vectors == passages and len(list(copy.documents())) == docs
        report = copy.check(sample=5)
        assert report.ok, report.problems


def test_a_backup_taken_while_a_writer_commits_is_one_whole_generation(tmp_path, tiny_model):
    index, _ = Index.build(tmp_path / "ix", corpus(), model=tiny_model)
    stop = tmp_path / "stop"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(ROOT), str(tmp_path / "ix"), "300", str(stop)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    generations = set()
    try:
        assert writer.stdout.readline().strip() == "0"  # the writer is committing from here on
        for n in range(30):  # bounded: until six generations were caught, at most 30 backups
            result = index.backup(tmp_path / f"backup-{n}")
            assert result.vectors_copied
            generations.add(result.generation)
            check_copy(tmp_path / f"backup-{n}", result.generation)
            if len(generations) >= 6 or writer.poll() is not None:
                break
    finally:
        stop.touch()
        out, err = writer.communicate(timeout=600)
    assert writer.returncode == 0, err[-2000:]
    assert len(generations) >= 2, generations  # the backups did overlap the writer's commits
    final = index.backup(tmp_path / "backup-final")
    check_copy(tmp_path / "backup-final", final.generation)
    with Index.open(tmp_path / "backup-final") as copy:
        assert stored(copy.documents()) == stored(index.documents())
        from search import Searcher

        assert [h.id for h in Searcher(copy).search("written in round", k=5)] == \
            [h.id for h in Searcher(index).search("written in round", k=5)]
    # restore: the first backup put back in place of the index, whole
    runner = CliRunner()
    done = runner.invoke(cli, ["index", "restore", str(tmp_path / "backup-0"), "--index", str(tmp_path / "ix")])
    assert done.exit_code == 0, done.output
    with Index.open(tmp_path / "ix") as restored, Index.open(tmp_path / "backup-0") as first:
        assert stored(restored.documents()) == stored(first.documents())
    refused = runner.invoke(cli, ["index", "backup", str(tmp_path / "backup-0"), "--index", str(tmp_path / "ix")])
    assert refused.exit_code == 1 and "--force" in refused.output


class FakeEngine:
    """The writer's engine seam: one passage a document, a seeded unit vector (no model)."""

    def __init__(self, dimension: int):
        self.dimension = dimension

    def encode_chunks(self, chunks, settings, progress=None):
        for chunk in chunks:
            out = {}
            for doc_id, (text, _meta, _digest) in chunk.to_encode.items():
                v = np.random.default_rng(int(doc_id.split("-")[1])).standard_normal((1, self.dimension))
                out[doc_id] = EncodedDocument([Passage(0, 0, len(text), text)], (v / np.linalg.norm(v)).astype(np.float32))
            yield chunk, out


def passage_text(i: int) -> str:
    rng = np.random.default_rng(i)
    return " ".join(f"w{int(x)}" for x in rng.integers(0, 5000, 120))[:550]


def test_deletes_give_space_back(tmp_path, tiny_model):
    """The delete cycle of #19 at a small size: after deleting 90 %, and after deleting all then adding
    10 %, the folder (WAL included, index still open) is at most 1.5x a fresh build of what is left."""
    n = 3000

    def build(folder, ids):
        index = Index.create(folder, model=tiny_model)
        with index.writer(FakeEngine(int(index.config["dimension"]))) as w:
            w.add({"id": f"doc-{i}", "text": passage_text(i)} for i in ids)
        return index

    sizes: dict[tuple, int] = {}

    def fresh(ids) -> int:
        """The folder of a fresh build of ``ids``, closed (so without a WAL)."""
        if tuple(ids) not in sizes:
            folder = tmp_path / f"fresh-{len(sizes)}"
            build(folder, ids).close()
            sizes[tuple(ids)] = space.folder_bytes(folder)
        return sizes[tuple(ids)]

    index = build(tmp_path / "cycle", range(n))
    gone = sorted(np.random.default_rng(0).choice(n, size=n * 9 // 10, replace=False).tolist())
    index.delete(f"doc-{i}" for i in gone)
    left = sorted(set(range(n)) - set(gone))
    after_delete = space.folder_bytes(index.path)
    assert after_delete <= 1.5 * fresh(left), (after_delete, fresh(left))
    index.delete(f"doc-{i}" for i in left)
    new = list(range(n, n + n // 10))
    with index.writer(FakeEngine(int(index.config["dimension"]))) as w:
        w.add({"id": f"doc-{i}", "text": passage_text(i)} for i in new)
    after_cycle = space.folder_bytes(index.path)
    assert after_cycle <= 1.5 * fresh(new), (after_cycle, fresh(new))
    assert Generations(index.store, index.path).load() is True  # (fake vectors: no re-encoding check)
    # an index made before auto-vacuum gets it from compact, and compact gives the rest back
    index.store.conn.execute("PRAGMA auto_vacuum = NONE")
    index.store.conn.execute("VACUUM")
    result = index.compact()
    assert index.store.conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
    assert result.bytes_after <= 1.5 * fresh(new) and len(list(index.documents())) == len(new)
    index.close()


@pytest.fixture
def server(tmp_path, tiny_model):
    from servers import ready, serving

    Index.build(tmp_path / "ix", corpus(), model=tiny_model)[0].close()

    def start(**settings):
        context = serving(tmp_path / "ix", token="secret-token", **settings)
        url, app = context.__enter__()
        ready(url)
        opened.append(context)
        return url

    opened: list = []
    yield start
    for context in opened:
        context.__exit__(None, None, None)


def scrape(url: str) -> dict[tuple, float]:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics").text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_move_under_a_small_load_and_documents_read_back(server):
    import httpx

    url = server()
    before = scrape(url)
    for i in range(6):  # bounded load: a few of each kind of request
        assert httpx.get(f"{url}/search", params={"q": f"rivers {i}", "k": 3}).status_code == 200
    assert httpx.post(f"{url}/search", json={"queries": ["banks", "trees"], "k": 2}).status_code == 200
    assert httpx.post(f"{url}/embed", json={"texts": ["a text"]}).status_code == 200
    assert httpx.post(f"{url}/faq/answer", json={"question": "rivers?"}).status_code == 200
    assert httpx.get(f"{url}/documents/nope").status_code == 404
    one = httpx.get(f"{url}/documents/doc-004").json()
    assert one["id"] == "doc-004" and one["metadata"] == {"topic": "money", "n": 4}
    page = httpx.get(f"{url}/documents", params={"limit": 5, "where": "topic=water"}).json()
    assert [d["id"] for d in page["documents"]] == ["doc-000", "doc-003", "doc-006", "doc-009", "doc-012"]
    assert page["next_after"] == "doc-012"
    added = httpx.post(f"{url}/documents", headers={"Authorization": "Bearer secret-token"},
                       json={"documents": [{"id": "new-1", "text": "a new document"}]})
    assert added.status_code == 200, added.text
    after = scrape(url)
    moved = lambda name, **labels: value(after, name, **labels) - value(before, name, **labels)  # noqa: E731
    assert moved("semsearch_requests_total", route="/search", method="GET", status="200") == 6
    assert moved("semsearch_request_seconds_count", route="/search", method="POST") == 1
    assert moved("semsearch_request_seconds_count", route="/embed", method="POST") == 1
    assert moved("semsearch_request_seconds_count", route="/faq/answer", method="POST") == 1
    assert moved("semsearch_errors_total", route="/documents/{doc_id:path}", kind="client") == 1
    assert moved("semsearch_batch_size_count") >= 1 and moved("semsearch_batch_size_sum") >= 10
    assert moved("semsearch_model_calls_total", kind="search") >= 1
    assert moved("semsearch_model_calls_total", kind="embed") == 1
    assert moved("semsearch_write_seconds_count", kind="add") == 1
    assert value(after, "semsearch_index_documents") == 31
    assert value(after, "semsearch_index_generation") > value(before, "semsearch_index_generation")


def test_the_json_request_log_has_no_query_text_unless_asked(server):
    import logging

    import httpx

    from search.observe import access

    class Keep(logging.Handler):
        def __init__(self):
            super().__init__()
            self.lines: list[str] = []

        def emit(self, record):
            self.lines.append(record.getMessage())

    keep = Keep()
    access.addHandler(keep)
    try:
        url = server(log_format="json")
        assert httpx.get(f"{url}/search", params={"q": "confidential words", "k": 2}).status_code == 200
        lines = [json.loads(line) for line in keep.lines if '"/search"' in line]
        assert lines and lines[-1]["status"] == 200 and lines[-1]["query_chars"] == len("confidential words")
        assert lines[-1]["hits"] == 2 and lines[-1]["ms"] >= 0 and lines[-1]["method"] == "GET"
        assert not any("confidential" in line for line in keep.lines)
        url = server(log_format="json", log_queries=True)
        httpx.get(f"{url}/search", params={"q": "confidential words", "k": 2})
        assert any(json.loads(line).get("query") == "confidential words" for line in keep.lines)
    finally:
        access.removeHandler(keep)


def test_a_sharded_index_deletes_by_file_and_filter_and_backs_up(tmp_path, tiny_model):
    ShardedIndex.build(tmp_path / "sh", corpus(), shards=3, model=tiny_model)[0].close()
    runner = CliRunner()
    at = ["--index", str(tmp_path / "sh")]
    done = runner.invoke(cli, ["index", "delete", "--ids-from", "-", *at], input="doc-000\ndoc-001\n")
    assert done.exit_code == 0, done.output
    done = runner.invoke(cli, ["index", "delete", "--where", "topic=wood", *at])
    assert done.exit_code == 0, done.output
    done = runner.invoke(cli, ["index", "backup", str(tmp_path / "sh-backup"), *at])
    assert done.exit_code == 0, done.output
    expected = [d["id"] for d in corpus() if d["metadata"]["topic"] != "wood" and d["id"] not in ("doc-000", "doc-001")]
    with ShardedIndex.open(tmp_path / "sh") as sharded, ShardedIndex.open(tmp_path / "sh-backup") as copy:
        assert [d.id for d in sharded.documents()] == expected
        assert stored(copy.documents()) == stored(sharded.documents())
        assert all(shard.check(sample=2).ok for shard in copy.indexes)
    listed = runner.invoke(cli, ["index", "list", "--limit", "2", "--offset", "1", *at])
    assert [line.split("\t")[0] for line in listed.stdout.splitlines()] == expected[1:3]


def test_documents_stream_in_memory_that_does_not_grow_with_the_index(tmp_path, tiny_model):
    """Index.documents holds one batch: the peak traced memory of reading 30,000 documents is about
    that of reading 3,000 (a list of them all would be ten times larger)."""
    import tracemalloc

    def peak_reading(n: int) -> int:
        index = Index.create(tmp_path / f"ix-{n}", model=tiny_model)
        dimension = int(index.config["dimension"])
        vectors = np.random.default_rng(0).standard_normal((n, dimension)).astype(np.float32)
        with index.store.transaction():
            index.store.insert_vector_documents(1, vectors, prefix="doc-")
        tracemalloc.start()
        count = sum(1 for _ in index.documents())
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        index.close()
        assert count == n
        return peak

    small, large = peak_reading(3_000), peak_reading(30_000)
    assert large < 2 * small, (small, large)


def test_compact_runs_while_a_reader_holds_a_snapshot(tmp_path, tiny_model, monkeypatch):
    from search import Searcher

    monkeypatch.setattr(space, "COMPACT_WAL_WAIT_S", 0.2)  # this reader keeps its snapshot throughout
    writer, _ = Index.build(tmp_path / "ix", corpus(), model=tiny_model)
    writer.delete([f"doc-{i:03d}" for i in range(20)])
    reader = Index.open(tmp_path / "ix")
    before = [h.id for h in Searcher(reader).search("rivers", k=3)]
    with reader.snapshot() as snap:
        seen = snap.documents(["doc-025"])
        result = writer.compact()  # VACUUM under the write lock, this reader's snapshot open
        assert snap.documents(["doc-025"]) == seen
    assert result.bytes_after > 0
    again = writer.compact()  # no reader on an old snapshot now: the WAL is truncated
    assert again.bytes_after < result.bytes_before and not Path(f"{writer.path}/semsearch.db-wal").stat().st_size
    assert [h.id for h in Searcher(reader).search("rivers", k=3)] == before
    assert reader.check(sample=3).ok
    reader.close()
    writer.close()


@pytest.mark.parametrize("kind", ["plain", "sharded"])
def test_bad_paging_is_refused_at_the_call(indexes, kind):
    from index.errors import SemsearchError

    for bad in ({"offset": 1, "after": "doc-001"}, {"limit": -1}, {"offset": -2}):
        with pytest.raises(SemsearchError):
            indexes[kind].documents(**bad)


def test_a_page_of_documents_is_bounded_like_any_response(server):
    import httpx

    from search.limits import Limits

    url = server(limits=Limits(max_response_bytes=2_000))
    assert httpx.get(f"{url}/documents", params={"limit": 3}).status_code == 200
    too_big = httpx.get(f"{url}/documents", params={"limit": 30})
    assert too_big.status_code == 413 and "error" in too_big.json()
    assert httpx.get(f"{url}/documents", params={"limit": 1001}).status_code == 422
    assert httpx.get(f"{url}/documents", params={"offset": 1, "after": "doc-001"}).status_code == 400
