"""Hostile clients and hostile files: bounded work per request, one bad query fails alone, no
acknowledged write lost, nothing outside the index touched.

Every server here listens on 127.0.0.1 and every loop is bounded in count; waits poll with a
deadline, nothing sleeps a fixed time.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from index import Index, SemsearchError
from index.distributed.shards import ShardedIndex
from index.ingest.sources import ReadReport, read_documents
from index.model import model_cache
from index.storage import folder
from search import Searcher
from search.batching import MicroBatcher
from search.faq import faq_documents
from search.limits import Limits, redact
from servers import ready, serving, wait_until

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "s3cret-token"
DOCS = [{"id": f"d{i}", "text": text, "metadata": {"n": i}}
        for i, text in enumerate(["the quick brown fox", "hello world", "money in the bank", "a boat on the sea"])]


@pytest.fixture
def index(tiny_model, tmp_path) -> Path:
    path = tmp_path / "idx"
    Index.create(path, model=tiny_model).add([*faq_documents([{"id": "pw", "question": "reset my password",
                                                               "answer": "Use the link."}]), *DOCS])
    return path


@pytest.fixture
def server(index):
    limits = Limits(max_queries=8, max_query_chars=200, max_texts=4, max_text_chars=500, max_hits=50,
                    hit_text_chars=5, max_queue=64, body_seconds=2.0)
    with serving(index, token=TOKEN, limits=limits, allowed_hosts=["127.0.0.1", "localhost"]) as (url, app):
        ready(url)
        yield url, index


# --- bounded work per request ----------------------------------------------------------------------------
def test_an_oversized_request_is_refused_before_any_work_and_others_are_answered(server):
    url, _ = server
    huge = httpx.post(f"{url}/search", json={"queries": ["a"] * 10_000, "k": 1000}, timeout=60)
    assert huge.status_code == 413 and "at most 8" in huge.json()["error"]
    assert httpx.get(f"{url}/search", params={"q": "hello world", "k": 2}).status_code == 200
    hits = httpx.post(f"{url}/search", json={"queries": ["a", "b"], "k": 30})  # 60 hits > 50
    assert hits.status_code == 413 and "--max-hits" in hits.json()["error"]
    long_query = httpx.get(f"{url}/search", params={"q": "x" * 201})
    assert long_query.status_code == 413 and "--max-query-chars" in long_query.json()["error"]
    assert httpx.post(f"{url}/faq/answer", json={"question": "y" * 201}).status_code == 413
    assert httpx.post(f"{url}/embed", json={"texts": ["z"] * 5}).status_code == 413
    assert httpx.post(f"{url}/embed", json={"texts": ["z" * 501]}).status_code == 413


def test_hits_carry_a_bounded_snippet_unless_the_whole_text_is_asked(server):
    url, index = server
    short = httpx.get(f"{url}/search", params={"q": "the quick brown fox", "k": 1}).json()["hits"][0]
    assert short["text"] == "the q" and short["text_truncated"] is True
    assert short["passage"]["text"] == "the quick brown fox"  # the passage stays whole
    full = httpx.post(f"{url}/search", json={"queries": ["the quick brown fox"], "k": 1, "full_text": True}).json()
    assert full["results"][0]["hits"][0]["text"] == "the quick brown fox"


def test_a_full_queue_answers_503_with_retry_after(index):
    with serving(index, limits=Limits(max_queue=3)) as (url, _):
        ready(url)
        busy = httpx.post(f"{url}/search", json={"queries": ["a", "b", "c", "d"], "k": 1})
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
        assert httpx.post(f"{url}/search", json={"queries": ["a", "b"], "k": 1}).status_code == 200


def test_a_body_that_trickles_is_cut_off(server):
    url, _ = server
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"queries\"")  # then nothing more
        reply = sock.recv(4096).decode()
    assert reply.startswith("HTTP/1.1 408") and "did not arrive within 2 s" in reply
    assert httpx.get(f"{url}/health").status_code == 200


def test_many_idle_connections_do_not_stop_others(server):
    url, _ = server
    host, port = url.removeprefix("http://").split(":")
    idle = [socket.create_connection((host, int(port)), timeout=30) for _ in range(200)]
    try:
        assert httpx.get(f"{url}/search", params={"q": "hello", "k": 1}, timeout=60).status_code == 200
    finally:
        for sock in idle:
            sock.close()


def test_get_index_answers_from_the_open_index_and_hides_paths_without_the_token(server):
    url, index = server
    public = httpx.get(f"{url}/index").json()
    assert public["path"] == index.name and not public["model"].startswith("/")
    private = httpx.get(f"{url}/index", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert private["path"] == str(index)


def test_a_foreign_host_header_is_refused(server):
    url, _ = server
    assert httpx.get(f"{url}/health", headers={"Host": "attacker.example"}).status_code == 400
    assert httpx.get(f"{url}/health", headers={"Host": "localhost:1234"}).status_code == 200


def test_a_wrong_token_tried_again_and_again_changes_nothing(server):
    url, _ = server
    for n in range(50):
        bad = httpx.post(f"{url}/documents", json={"documents": [{"id": f"x{n}", "text": "no"}]},
                         headers={"Authorization": f"Bearer wrong-{n}"})
        assert bad.status_code == 401 and "wrong" not in bad.text
    assert httpx.get(f"{url}/search", params={"q": "hello", "k": 1}).status_code == 200


# --- one bad query fails alone ----------------------------------------------------------------------------
@pytest.mark.parametrize("poison", [
    {"query": "\ud800 lone surrogate"},
    {"query": "money", "where": {"n": 10 ** 20}},
    {"query": "money", "where": {f"k{i}": i for i in range(1000)}},
])
def test_a_poisoned_query_in_a_micro_batch_fails_alone(index, poison):
    with serving(index, batch_window=0.2, batch_max=32) as (url, _):
        ready(url)

        def ask(query, where=None):
            body = json.dumps({"queries": [query], "k": 2, "where": where})  # ASCII: a lone surrogate as \\ud800
            return httpx.post(f"{url}/search", content=body, headers={"Content-Type": "application/json"}, timeout=60)

        with __import__("concurrent.futures").futures.ThreadPoolExecutor(6) as pool:
            good = [pool.submit(ask, q) for q in ("hello world", "a boat", "the fox", "money in the bank", "sea")]
            bad = pool.submit(ask, poison["query"], poison.get("where"))
            answers = [f.result() for f in good]
            poisoned = bad.result()
        assert all(a.status_code == 200 and a.json()["results"][0]["hits"] for a in answers)
        if "where" in poison:  # a filter that cannot be valid is refused before any work, naming where
            assert poisoned.status_code == 422 and poisoned.json()["error"].startswith("invalid filter at where")
            return
        assert poisoned.status_code == 200
        entry = poisoned.json()["results"][0]
        assert entry["error"] and "Traceback" not in entry["error"] and "/" not in entry["error"]


def test_a_runner_that_breaks_on_one_item_fails_only_that_item():
    def runner(items):
        if "poison" in items:
            raise RuntimeError("boom")
        return [item.upper() for item in items]

    async def main():
        batcher = MicroBatcher([runner], window=0.05, max_items=8)
        batcher.start()
        results = await asyncio.gather(*(batcher.submit(x) for x in ("a", "poison", "b")), return_exceptions=True)
        await batcher.stop()
        return results

    a, poison, b = asyncio.run(main())
    assert (a, b) == ("A", "B") and isinstance(poison, RuntimeError)


def test_a_500_shows_no_exception_text_and_health_no_paths(index, tmp_path, monkeypatch):
    missing = tmp_path / "secret-place" / "nowhere"
    with serving(missing, token=TOKEN) as (url, _):
        body = wait_until(lambda: httpx.get(f"{url}/health").json().get("error"), what="the load error")
        assert str(tmp_path) not in body and "nowhere" in body
        authorised = httpx.get(f"{url}/health", headers={"Authorization": f"Bearer {TOKEN}"}).json()["error"]
        assert str(missing) in authorised
    monkeypatch.setattr(Index, "info", lambda self: (_ for _ in ()).throw(RuntimeError(f"oops at {tmp_path}")))
    with serving(index) as (url, _):
        ready(url)
        broken = httpx.get(f"{url}/index")
        assert broken.status_code == 500 and str(tmp_path) not in broken.text and "oops" not in broken.text


def test_redact_names_the_index_and_hides_other_paths(tmp_path):
    text = f"cannot open {tmp_path / 'idx'}/semsearch.db: see /etc/secret and model /opt/models/bert"
    assert redact(text, tmp_path / "idx") == "cannot open idx/semsearch.db: see <path> and model <path>"


# --- no acknowledged write lost ---------------------------------------------------------------------------
@pytest.mark.slow
def test_writes_during_a_forced_build_are_in_the_new_index_or_reported_failed(tiny_model, tmp_path):
    path = tmp_path / "idx"
    Index.create(path, model=tiny_model).add(DOCS)
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": f"c{i}", "text": f"document number {i} about topic {i % 37}"}) + "\n"
                              for i in range(12000)))
    token = tmp_path / "token"
    token.write_text(TOKEN)
    acked, failed = [], []
    with serving(path, token=TOKEN) as (url, _):
        ready(url)
        build = subprocess.Popen(["semsearch", "index", "build", str(corpus), "--index", str(path), "--force",
                                  "--wait", "--model", tiny_model, "-q"], stderr=subprocess.PIPE, text=True)
        try:
            wait_until(lambda: any(tmp_path.glob(f".idx.building-{build.pid}")) or build.poll() is not None,
                       what="the build to start building its new folder")
            assert build.poll() is None, "the build ended before any write could race it; give it more documents"
            n = 0
            while build.poll() is None and n < 200:  # writers against the build, bounded
                reply = httpx.post(f"{url}/documents", json={"documents": [{"id": f"w{n}", "text": f"write {n}"}]},
                                   headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120)
                (acked if reply.status_code == 200 else failed).append((f"w{n}", reply.status_code))
                n += 1
            assert build.wait(600) == 0, build.stderr.read()
        finally:
            if build.poll() is None:
                build.kill()
    with Index.open(path) as after:
        stored = set(after.store.document_ids()) if hasattr(after.store, "document_ids") else None
        count = after.store.counts()[0]
        present = {doc_id for doc_id, _ in acked if after.store.documents([doc_id])}
    assert acked or failed, "no write was tried while the build ran"
    assert present == {doc_id for doc_id, _ in acked}, "an acknowledged write is missing from the new index"
    assert all(status in (409, 503) for _, status in failed), failed
    assert count == 12000 + len(acked) and (stored is None or "d0" not in stored)


def test_a_writer_that_waited_for_a_replaced_index_writes_nothing(tiny_model, tmp_path):
    path = tmp_path / "idx"
    Index.create(path, model=tiny_model).add(DOCS)
    stale = Index.open(path, wait=60)  # opened before the swap: its folder is about to go
    Index.build(path, [{"id": "new", "text": "the new index"}], force=True, model=tiny_model)
    with pytest.raises(SemsearchError, match="was replaced"):
        stale.add([{"id": "late", "text": "written into the old folder"}])
    with Index.open(path) as fresh:
        assert fresh.store.counts()[0] == 1


# --- files outside the index ------------------------------------------------------------------------------
def test_a_folder_cannot_make_the_index_read_outside_it_or_hang(tmp_path):
    secret = tmp_path / "home" / ".ssh" / "id_rsa"
    secret.parent.mkdir(parents=True)
    secret.write_text("PRIVATE KEY")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "ok.txt").write_text("a fine note")
    (docs / "notes.txt").symlink_to(secret)
    (docs / "zero.txt").symlink_to("/dev/zero")
    os.mkfifo(docs / "pipe.txt")
    report = ReadReport()
    found = []
    reader = threading.Thread(target=lambda: found.extend(read_documents([str(docs)], report=report)), daemon=True)
    reader.start()
    reader.join(120)
    assert not reader.is_alive(), "reading the folder hung (a FIFO was opened)"
    assert [d.id for d in found] == ["ok.txt"]
    assert report.skipped_links == 2 and report.skipped_special == 1
    followed = ReadReport()
    texts = {d.id: d.text for d in read_documents([str(docs)], report=followed, follow_symlinks=True)}
    assert texts == {"notes.txt": "PRIVATE KEY", "ok.txt": "a fine note"}  # asked for: followed, /dev/zero still not
    assert followed.skipped_special == 2


def test_documents_over_the_size_limit_are_refused_with_one_line(tmp_path):
    big = tmp_path / "big.txt"
    big.write_text("word " * 1000)
    report = ReadReport()
    assert list(read_documents([str(big)], report=report, max_document_bytes=1000)) == []
    assert "limit for one document" in report.warnings[0]
    line = tmp_path / "one.jsonl"
    line.write_text(json.dumps({"_id": "x", "text": "y" * 5000}) + "\n")
    with pytest.raises(SemsearchError, match="over the .* MB limit"):
        list(read_documents([str(line)], max_document_bytes=1000))
    with pytest.raises(SemsearchError, match="over the .* MB limit"):
        list(read_documents(["/dev/zero"], format="jsonl", max_document_bytes=1000))


def test_the_cli_refuses_a_long_line_in_one_line(tmp_path, tiny_model):
    line = tmp_path / "one.jsonl"
    line.write_text(json.dumps({"_id": "x", "text": "y" * 5000}) + "\n")
    done = subprocess.run(["semsearch", "index", "build", str(line), "--index", str(tmp_path / "i"), "--model",
                           tiny_model, "--max-document-mb", "0.001"], capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "Traceback" not in done.stderr and "limit for one document" in done.stderr


def test_clean_up_removes_only_folders_semsearch_marked(index, tmp_path):
    backup = tmp_path / ".idx.old-999999999"  # a user's own copy, named like a leftover of a dead process
    backup.mkdir()
    (backup / "semsearch.db").write_text("my backup")
    leftover = tmp_path / ".idx.building-999999998"
    leftover.mkdir()
    folder.mark(leftover)
    Index.open(index).close()
    assert (backup / "semsearch.db").read_text() == "my backup" and not leftover.exists()


@pytest.mark.parametrize("name", ["../outside", "/tmp", "shard-0/../../x", ".."])
def test_a_crafted_shard_manifest_is_refused(tiny_model, tmp_path, name):
    sharded = tmp_path / "sharded"
    ShardedIndex.create(sharded, 2, model=tiny_model).close()
    manifest = sharded / "semsearch-shards.json"
    data = json.loads(manifest.read_text())
    data["shards"][1] = name
    manifest.write_text(json.dumps(data))
    with pytest.raises(SemsearchError, match="not a plain folder name"):
        ShardedIndex.open(sharded)


def test_new_index_folders_are_private(index):
    assert index.stat().st_mode & 0o077 == 0
    assert not (index / folder.MARKER).exists()


def test_a_cache_folder_of_another_user_is_not_used(tmp_path, monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("giving a folder to another user needs root")
    planted = tmp_path / "shared-cache"
    planted.mkdir(mode=0o777)
    os.chown(planted, 65534, 65534)  # nobody
    monkeypatch.setenv("SEMSEARCH_CACHE", str(planted))
    with pytest.warns(UserWarning, match="is not used"):
        root = model_cache.cache_root()
    assert root != planted and root.stat().st_uid == os.geteuid() and root.stat().st_mode & 0o077 == 0
    mine = tmp_path / "my-cache"
    mine.mkdir(mode=0o755)
    os.chmod(mine, 0o755)
    monkeypatch.setenv("SEMSEARCH_CACHE", str(mine))
    assert model_cache.cache_root() == mine and mine.stat().st_mode & 0o777 == 0o700


def test_serve_warns_of_a_token_file_others_can_read(index, tmp_path):
    token = tmp_path / "token"
    token.write_text(TOKEN)
    token.chmod(0o644)
    proc = subprocess.Popen(["semsearch", "serve", "--index", str(index), "--port", "0", "--token-file", str(token)],
                            stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        wait_until(lambda: lines.append(proc.stderr.readline()) or "serving" in lines[-1] or proc.poll() is not None,
                   what="the server to start")
        assert any("can be read by other users" in line for line in lines), lines
        assert not any(TOKEN in line for line in lines)
        url = re.search(r"http://[\d.]+:\d+", lines[-1]).group(0)
        ready(url)
        assert Searcher(index).search("hello world", k=1)
    finally:
        proc.terminate()
        proc.wait(30)


def test_the_queued_work_of_a_client_that_left_is_dropped():
    from search.http import ServiceError, until_disconnected

    seen, gate = [], threading.Event()

    def runner(items):
        gate.wait(60)
        seen.extend(items)
        return items

    class Gone:  # a client whose connection has closed
        async def is_disconnected(self):
            return True

    async def main():
        batcher = MicroBatcher([runner], window=0, max_items=1)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit("first"))  # holds the only worker
        while batcher.queue.qsize() or not batcher.batches:
            await asyncio.sleep(0.01)
        with pytest.raises(ServiceError):
            await until_disconnected(Gone(), asyncio.gather(*(batcher.submit(f"q{i}") for i in range(5))))
        gate.set()
        assert await first == "first"
        for _ in range(3000):  # bounded: the worker skips what was cancelled
            if batcher.queue.empty():
                break
            await asyncio.sleep(0.01)
        await batcher.stop()

    asyncio.run(main())
    assert seen == ["first"]
