"""Readers and writers in separate processes.

* Searchers in other processes keep answering, correctly and without "database is
  locked", while a writer adds documents in many commits and rebuilds the index.
* A long-running ``Searcher`` sees what another process committed, without reopening.
* One writer at a time: a second one gets ``IndexLockedError`` naming the holder's pid,
  or waits with ``wait=True``; the lock of a SIGKILLed process blocks nobody.

Every child process is bounded by a timeout and killed in ``finally``. Nothing here
sleeps to let something happen: the tests wait for what the other side reports
(readers print the generation they answered from), with generous deadlines, and the
lock's clock is replaced where a test is about how long it waits.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import index.options as options_module
import index.storage.lock as lock_module
from cli import cli
from index.errors import IndexLockedError
from index.indexer import Index
from index.storage.lock import LOCK_NAME
from search import Searcher

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}

_WORDS = """the a an of to and in is it you i my me we how do does can what where when why who
reset password login account delete remove invoice billing bank river money boat ship sea eat
pear fruit rates raised sat on find see forgot secret email address change document passage
search index query test long text quick brown fox jumps over lazy dog number cat mat hello world
apple orange""".split()


def make_docs(n: int, prefix: str, seed: int) -> list[dict]:
    import random

    rng = random.Random(seed)
    return [{"id": f"{prefix}{i:03d}", "text": f"{' '.join(rng.sample(_WORDS, 4))} {prefix} {i}",
             "metadata": {"i": i}} for i in range(n)]


KNOWN = make_docs(40, "k", seed=11)  # exist before any writer starts; never changed or deleted


@pytest.fixture
def fast_faiss():
    """One FAISS OpenMP thread (next to torch's pool, the default is ~100x slower on 2 cores)."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


@pytest.fixture
def known_index(tiny_model, tmp_path) -> Path:
    path = tmp_path / "idx"
    with Index.create(path, model=tiny_model) as index:
        index.add(KNOWN)
    return path


def consistent(path: Path) -> tuple[int, int]:
    """Every passage row has exactly one vector and every vector a row; returns the counts."""
    with Index.open(path) as index:
        rows = {int(i) for ids, _ in index.store.iter_vectors(index.config["dimension"]) for i in ids}
        assert set(index.vectors.ids().tolist()) == rows
        assert index.vectors.ntotal == index.store.counts()[1] == len(rows)
        return index.store.counts()


def finish(proc: subprocess.Popen, timeout: float = 60) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=10)
        raise AssertionError(f"child {proc.pid} did not finish in {timeout} s: {err[-2000:]}")


def kill_all(procs) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def read_line(proc: subprocess.Popen, timeout: float) -> str:
    """The child's next stdout line, or fail after ``timeout`` seconds."""
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not box:
        proc.kill()
        raise AssertionError(f"child {proc.pid} said nothing for {timeout} s")
    if not box[0]:
        err = proc.stderr.read() if proc.stderr else ""
        raise AssertionError(f"child {proc.pid} exited (rc {proc.wait()}): {err[-2000:]}")
    return box[0].strip()


# --- readers while a writer adds and rebuilds ---------------------------------------------------
READER = r'''
import json, os, sys, threading, time
import faiss
faiss.omp_set_num_threads(1)
from search import Searcher

path, known = sys.argv[1], json.loads(sys.argv[2])
searcher = Searcher(path)
searcher.search(known[0][1], k=5)  # model loaded, everything warm
print("ready", flush=True)
assert sys.stdin.readline().strip() == "go"
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
queries = failures = 0
errors, generations = [], set()
while not stop.is_set():
    doc_id, text = known[queries % len(known)]
    queries += 1
    problem = None
    try:
        hits = searcher.search(text, k=5)
        if searcher.generation not in generations or queries % 25 == 0:  # progress, for the test to wait on
            print(json.dumps({"generation": searcher.generation, "queries": queries}), flush=True)
        generations.add(searcher.generation)
        if len(hits) != 5:
            problem = f"{doc_id}: {len(hits)} hits"
        elif hits[0].id != doc_id or abs(hits[0].score - 1.0) > 1e-4 or hits[0].text != text:
            problem = f"{doc_id}: first hit {hits[0].id} score {hits[0].score}"
        elif any(a.score < b.score for a, b in zip(hits, hits[1:])):
            problem = f"{doc_id}: hits not in score order"
        else:
            stored = searcher.index.store.documents([h.id for h in hits])  # documents are never deleted
            if set(stored) != {h.id for h in hits} or any(stored[h.id][0] != h.text for h in hits):
                problem = f"{doc_id}: a hit names a document that is not stored: {[h.id for h in hits]}"
    except Exception as exc:
        problem = f"{doc_id}: {type(exc).__name__}: {exc}"
    if problem:
        failures += 1
        if len(errors) < 10:
            errors.append(problem)
print(json.dumps({"pid": os.getpid(), "queries": queries, "failures": failures, "errors": errors,
                  "generations": sorted(generations)}), flush=True)
'''


class ReaderProgress:
    """Follows what a reader process prints: the generations it answered from and its query count."""

    def __init__(self, proc: subprocess.Popen):
        self.lines: list[str] = []
        self.generation = -1
        self.queries = 0
        self.first_seen: dict[int, int] = {}  # generation -> query count when first answered from it
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._pump, args=(proc,), daemon=True)
        self.thread.start()

    def _pump(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            line = line.strip()
            with self.changed:
                self.lines.append(line)
                status = json.loads(line) if line.startswith("{") else {}
                if "generation" in status:
                    self.generation, self.queries = status["generation"], status["queries"]
                    self.first_seen.setdefault(self.generation, self.queries)
                self.changed.notify_all()

    def reached(self, generation: int, total: int, after: int) -> bool:
        return (self.generation >= generation and self.queries >= total
                and self.queries - self.first_seen.get(generation, self.queries) >= after)


def wait_for_readers(watches: list[ReaderProgress], generation: int, total: int = 0, after: int = 0,
                     deadline: float = 120) -> None:
    """Until every reader has answered from ``generation`` (``after`` queries since it first did,
    ``total`` queries in all); fails after a generous deadline."""
    until = time.monotonic() + deadline
    for watch in watches:
        with watch.changed:
            while not watch.reached(generation, total, after):
                left = until - time.monotonic()
                if left <= 0 or not watch.thread.is_alive():
                    raise AssertionError(f"a reader did not reach generation {generation} ({total} queries, "
                                         f"{after} after it): it is at {watch.generation}, {watch.queries} queries; "
                                         f"last lines {watch.lines[-3:]}")
                watch.changed.wait(min(left, 1.0))


@pytest.mark.slow
def test_readers_keep_answering_while_a_writer_adds_and_rebuilds(known_index, monkeypatch, fast_faiss):
    known = [[d["id"], d["text"]] for d in KNOWN]
    readers = []
    try:
        for _ in range(2):
            readers.append(subprocess.Popen(
                [sys.executable, "-c", READER, str(known_index), json.dumps(known)], cwd=ROOT,
                # one OpenMP thread per reader: 2 readers + the writer on a small machine would
                # otherwise spin against each other (correctness is unaffected either way)
                env={**ENV, "OMP_NUM_THREADS": "1"},
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        for reader in readers:
            assert read_line(reader, 180) == "ready"
        watches = [ReaderProgress(reader) for reader in readers]
        for reader in readers:
            reader.stdin.write("go\n")
            reader.stdin.flush()

        # The writer: 10 commits of new documents, a rebuild (every passage id changes), one more commit.
        # After each write, every reader must have answered from it before the next one starts.
        monkeypatch.setattr(options_module, "COMMIT_EVERY", 10)
        new = make_docs(110, "w", seed=12)
        index = Index.open(known_index)
        wait_for_readers(watches, index.store.generation())
        for start in range(0, 100, 20):
            result = index.add(new[start:start + 20])
            assert result.added == 20
            wait_for_readers(watches, index.store.generation())
        assert index.rebuild().documents == 140
        wait_for_readers(watches, index.store.generation())
        index.add(new[100:])
        final_generation = index.store.generation()
        index.close()
        wait_for_readers(watches, final_generation, total=100, after=20)  # the final state, queried a while

        reports = []
        for reader in readers:
            reader.stdin.write("stop\n")
            reader.stdin.flush()
        for reader, watch in zip(readers, watches):
            # The watch alone reads the reader's stdout, to its end: a second reader of the pipe
            # (communicate) could take part of a line and join two reports into one.
            watch.thread.join(60)
            assert not watch.thread.is_alive(), f"reader {reader.pid} did not finish"
            reader.wait(timeout=30)
            err = reader.stderr.read()
            assert reader.returncode == 0, err[-2000:]
            last = [line for line in watch.lines if '"pid"' in line]
            reports.append(json.loads(last[-1]))
    finally:
        kill_all(readers)

    print(f"\nreaders: {[(r['queries'], r['failures'], len(r['generations'])) for r in reports]} "
          "(queries, failures, generations seen)")
    for report in reports:
        assert report["failures"] == 0, report["errors"]
        assert report["queries"] >= 100, report
        # they really read while the writer worked, and reloaded up to its last commit
        assert len(report["generations"]) >= 3, report["generations"]
        assert report["generations"][-1] == final_generation, (report["generations"], final_generation)
    assert consistent(known_index) == (150, 150)


def test_search_racing_a_rebuild_commit_still_finds_the_document(known_index, fast_faiss):
    """A rebuild commits between a reader's FAISS search and its passage-row lookup (the
    window inside ``Searcher.search_vectors``); the known document must still come first."""
    searcher = Searcher(known_index)
    doc = KNOWN[3]
    assert searcher.search(doc["text"], k=5)[0].id == doc["id"]
    writer = Index.open(known_index)
    store = searcher.index.store
    lookup = store.passages
    fired = []

    def passages(ids):
        if not fired:
            fired.append(writer.rebuild().documents)  # another connection commits right now
        return lookup(ids)

    store.passages = passages
    try:
        hits = searcher.search(doc["text"], k=5)
    finally:
        del store.passages
        writer.close()
    assert fired == [len(KNOWN)]
    assert [h.id for h in hits][:1] == [doc["id"]], [(h.id, h.score) for h in hits]
    assert abs(hits[0].score - 1.0) < 1e-4 and len(hits) == 5


# --- a long-running Searcher and a writer in another process -----------------------------------
WRITER = r'''
import json, sys
import index.options
from index.indexer import Index

args = json.loads(sys.argv[1])
index.options.COMMIT_EVERY = args.get("commit_every", index.options.COMMIT_EVERY)
index = Index.open(args["path"])
if args["op"] == "add":
    index.add(args["docs"], on_commit=lambda ids: print("C " + json.dumps(ids), flush=True))
else:
    index.rebuild(model=args.get("model"), layer=args.get("layer"))
print("done", flush=True)
'''


def run_writer(**args) -> list[str]:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, json.dumps(args)], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = finish(proc, 180)
    finally:
        kill_all([proc])
    assert proc.returncode == 0, f"writer rc {proc.returncode}; stdout {out[-500:]!r}; stderr {err[-3000:]}"
    return out.splitlines()


@pytest.mark.slow
def test_long_running_searcher_sees_commits_of_another_process(known_index, fast_faiss):
    searcher = Searcher(known_index)
    index_object = searcher.index
    new = make_docs(12, "x", seed=13)
    assert searcher.search(new[0]["text"], k=1)[0].id.startswith("k")  # not there yet
    lines = run_writer(op="add", path=str(known_index), docs=new, commit_every=5)
    assert [line for line in lines if line.startswith("C ")] == [
        "C " + json.dumps([d["id"] for d in new[i:i + 5]]) for i in (0, 5, 10)]
    assert searcher.index is index_object  # not reopened
    for doc, hits in zip(new + KNOWN, searcher.search_many([d["text"] for d in new + KNOWN], k=3)):
        assert hits[0].id == doc["id"] and abs(hits[0].score - 1.0) < 1e-4, (doc["id"], hits[0])
    assert searcher.index.info().documents == len(KNOWN) + len(new)


@pytest.mark.slow
@pytest.mark.parametrize("change", ["layer", "model"])
def test_long_running_searcher_follows_a_rebuild_by_another_process(change, known_index, tiny_model_other,
                                                                      fast_faiss):
    """After another process re-encodes the index with another layer (or model), a long-running
    Searcher must embed queries the new way: a document's own text scores ~1 again.
    (An exact self-match scores 1 within ~1e-6; layers -1 and -2 of the tiny BERT differ by ~1e-4.)"""
    searcher = Searcher(known_index)
    texts = [d["text"] for d in KNOWN]
    for doc, hits in zip(KNOWN, searcher.search_many(texts, k=3)):
        assert hits[0].id == doc["id"] and abs(hits[0].score - 1.0) < 1e-5
    before = dict(searcher.index.config)
    if change == "layer":
        run_writer(op="rebuild", path=str(known_index), layer=-1)
    else:
        run_writer(op="rebuild", path=str(known_index), model=tiny_model_other)
    with Index.open(known_index) as fresh:
        if change == "layer":
            assert (before["layer"], fresh.config["layer"]) == (-2, -1)
        else:
            assert fresh.config["model_fingerprint"] != before["model_fingerprint"]
        reference = Searcher(fresh).search_many(texts, k=3)  # a new Searcher: the right answers
        for doc, hits in zip(KNOWN, reference):
            assert hits[0].id == doc["id"] and abs(hits[0].score - 1.0) < 1e-5
    wrong = [(doc["id"], hits[0].id, round(hits[0].score, 6))
             for doc, hits in zip(KNOWN, searcher.search_many(texts, k=3))
             if hits[0].id != doc["id"] or abs(hits[0].score - 1.0) > 1e-5]
    assert not wrong, f"{len(wrong)} of {len(KNOWN)} documents not found as themselves, e.g. {wrong[:3]}"


# --- the write lock -------------------------------------------------------------------------------
LOCKER = r'''
import os, sys
from index.storage.lock import WriteLock

lock = WriteLock(sys.argv[1]).acquire()
print("locked", os.getpid(), flush=True)
if sys.stdin.readline():  # "release"
    lock.release()
    print("released", flush=True)
    sys.stdin.readline()  # until stdin closes
'''


def start_locker(path: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", LOCKER, str(path)], cwd=ROOT, env=ENV,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert read_line(proc, 60) == f"locked {proc.pid}"
    return proc


class LockClock:
    """Stands in for the lock module's ``time``: counts the lock's retries, and can run a fake
    clock (each retry's sleep advances it without sleeping) or tell when the lock starts waiting."""

    def __init__(self, fake: bool):
        self.fake = fake
        self.now = 0.0
        self.sleeps: list[float] = []
        self.waiting = threading.Event()

    def monotonic(self) -> float:
        return self.now if self.fake else time.monotonic()

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.waiting.set()
        if self.fake:
            self.now += seconds
        else:
            time.sleep(seconds)


def stored(path: Path, doc_id: str) -> bool:
    with Index.open(path) as index:
        return bool(index.store.documents([doc_id]))


def test_second_writer_is_refused_with_the_holders_pid_or_waits(known_index, tiny_model, fast_faiss, monkeypatch):
    doc = {"id": "late", "text": "where do i find my invoice", "metadata": {}}
    locker = start_locker(known_index)
    try:
        with pytest.raises(IndexLockedError) as refused:
            Index.open(known_index).add([doc])
        assert f"process {locker.pid}" in str(refused.value)
        with pytest.raises(IndexLockedError, match=f"process {locker.pid}"):
            Index.open(known_index).rebuild()
        with pytest.raises(IndexLockedError, match=f"process {locker.pid}"):
            Index.open(known_index).delete([KNOWN[0]["id"]])
        clock = LockClock(fake=True)
        with monkeypatch.context() as patch:
            patch.setattr(lock_module, "time", clock)
            with pytest.raises(IndexLockedError):
                Index.open(known_index, wait=0.5).add([doc])
        assert 0.5 <= clock.now < 0.6 and len(clock.sleeps) >= 5  # retried until its deadline, not longer
        result = CliRunner().invoke(cli, ["index", "delete", KNOWN[0]["id"], "--index", str(known_index)])
        assert result.exit_code != 0 and f"process {locker.pid}" in result.output, result.output
        assert not stored(known_index, "late") and stored(known_index, KNOWN[0]["id"])

        # wait=True: blocks until the holder releases (the holder stays alive), then writes
        clock = LockClock(fake=False)
        outcome: dict = {}

        def write_when_free() -> None:
            try:
                outcome["result"] = Index.open(known_index, wait=True).add([doc])
            except BaseException as exc:  # reported by the assertions below
                outcome["error"] = exc

        with monkeypatch.context() as patch:
            patch.setattr(lock_module, "time", clock)
            writer = threading.Thread(target=write_when_free, daemon=True)
            writer.start()
            assert clock.waiting.wait(60), "the second writer never waited for the lock"
            assert writer.is_alive() and not stored(known_index, "late")  # waiting, nothing written
            locker.stdin.write("release\n")
            locker.stdin.flush()
            writer.join(120)
        assert not writer.is_alive() and "error" not in outcome, outcome
        assert outcome["result"].added == 1
        assert read_line(locker, 10) == "released"
        assert locker.poll() is None  # released, not exited
        assert stored(known_index, "late")
        assert consistent(known_index) == (len(KNOWN) + 1, len(KNOWN) + 1)
    finally:
        if locker.stdin and not locker.stdin.closed:
            locker.stdin.close()
        try:
            locker.wait(timeout=10)
        finally:
            kill_all([locker])


def test_lock_of_a_killed_process_does_not_block(known_index, tiny_model, fast_faiss, monkeypatch):
    doc = {"id": "after-kill", "text": "the bank of the river", "metadata": {}}
    locker = start_locker(known_index)
    try:
        with pytest.raises(IndexLockedError):
            Index.open(known_index).add([doc])
        locker.send_signal(signal.SIGKILL)
        assert locker.wait(timeout=10) == -signal.SIGKILL
    finally:
        kill_all([locker])
    assert (known_index / LOCK_NAME).read_text().strip() == str(locker.pid)  # the dead holder's record
    clock = LockClock(fake=True)
    monkeypatch.setattr(lock_module, "time", clock)
    result = Index.open(known_index).add([doc])  # no wait: must not be refused
    assert result.added == 1
    assert clock.sleeps == []  # taken at the first try
    assert (known_index / LOCK_NAME).read_text().strip() == str(os.getpid())
    assert stored(known_index, "after-kill")
    assert consistent(known_index) == (len(KNOWN) + 1, len(KNOWN) + 1)
