"""Crash safety: a writer killed with SIGKILL at any moment leaves a consistent, resumable index.

The guarantee under test (index/indexer.py): after ``add``, ``build`` or ``rebuild``
is killed at any point,

* ``Index.open(path)`` works and is consistent: every passage row has exactly one
  vector and every vector a row (FAISS ids == passage ids, ``ntotal`` == passages);
* every document the writer reported through ``on_commit`` is stored and found
  first, with score ~1, when its exact text is searched; documents of chunks that
  were not committed are absent (the stored set is a whole number of chunks);
* a rebuild leaves either the old or the new layer recorded, with vectors of
  exactly that layer;
* running the same command again finishes the job without duplicates.

Starting a fresh interpreter costs ~5 s here (torch + transformers imports), so
the writers are forked from one warm "fork server" (started once with
``subprocess.Popen([sys.executable, "-c", ZYGOTE])``): each writer is a separate
process that loads the model and runs the job, and is SIGKILLed by this test.
The CLI variant runs the real ``semsearch`` command line in fresh processes.

Random kills are complemented by deterministic crash points: the writer SIGKILLs
itself at one observable event (a store write, a FAISS file renamed into place or
about to be removed, the on_commit callback, the renames of ``build --force``).
"""

from __future__ import annotations

import json
import os
import queue
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import index.options as options_module
from cli import cli
from index.ann.ivf_disk import IVFDiskIndex
from index.indexer import Index
from index.model.encoder import Encoder
from index.records import AddResult
from index.storage.deltas import delta_files
from index.storage.generations import base_generation, chain_names, data_files, data_name, vector_files
from index.storage.store import DB_NAME
from search import Searcher

ROOT = Path(__file__).resolve().parents[1]
COMMIT_EVERY = 20
N_DOCS = 300
N_REPEATS = 12  # ids repeated (same text) at the end of the input: distinct ids = N_DOCS
MAX_LENGTH = 64  # what the tiny BERT records (max_position_embeddings)
SAME = 5e-6  # 1 - cosine of a vector with its own re-encoding stays below this
OTHER = 3e-5  # ... and the other layer's encoding is further than this (tiny BERT: >= ~1e-4)

_WORDS = """the a an of to and in is it you i my me we how do does can what where when why who
reset password login account delete remove invoice billing bank river money boat ship sea eat
pear fruit rates raised sat on find see forgot secret email address change document passage
search index query test long text quick brown fox jumps over lazy dog number cat mat hello world
apple orange""".split()


def make_docs(n: int, seed: int, prefix: str = "d") -> list[dict]:
    rng = random.Random(seed)
    return [
        {"id": f"{prefix}{i:04d}", "text": f"{' '.join(rng.sample(_WORDS, 4))} {i}", "metadata": {"n": i}}
        for i in range(n)
    ]


def with_repeats(docs: list[dict], n: int) -> list[dict]:
    """The input as written to the writer: every document, then ``n`` early ids again (same text)."""
    return docs + [dict(d) for d in docs[:n]]


def write_jsonl(path: Path, docs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    return path


@pytest.fixture
def fast_faiss():
    """FAISS with one OpenMP thread: on a 2-core machine the default (next to torch's own
    OpenMP pool) makes each search ~100x slower; results are identical."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


# --- the fork server -----------------------------------------------------------------------
ZYGOTE = r'''
import json, os, signal, sys, traceback
os.environ["TOKENIZERS_PARALLELISM"] = "false"
import torch, transformers, faiss  # the slow imports, done once for every writer
from transformers import AutoConfig, AutoModel, AutoTokenizer
import transformers.models.bert.modeling_bert, transformers.models.bert.tokenization_bert
import index.indexer, index.storage.store, index.ann.registry, index.storage.lock, index.model.encoder, index.ingest.passages, index.storage.writer
import index.ann.flat, index.ann.hnsw, index.ann.ivf, index.ann.ivfpq, index.ann.ivf_disk
import search.searcher


def say(line):
    os.write(1, (line + "\n").encode())


def install_crash(spec, cmd):
    """Make this worker SIGKILL itself at a chosen point (deterministic crash points).

    The points are observable events (a store write, a FAISS file renamed into place or
    removed, the on_commit callback), not private methods. Returns the on_commit hook.
    """
    if not spec:
        return None
    import pathlib
    from index.storage.lock import WriteLock
    from index.storage.store import MetadataStore
    kind, n = spec["kind"], spec.get("n", 1)
    hits = [0]

    def hit():
        hits[0] += 1
        if hits[0] == n:
            say("crash " + kind)
            os.kill(os.getpid(), signal.SIGKILL)

    def is_vectors_file(name, ends=(".faiss", ".delta")):
        name = os.path.basename(str(name))
        return name.startswith("vectors-") and name.endswith(ends)

    if kind == "on_commit":  # inside the n-th on_commit callback: that chunk is durable
        return hit
    if kind in ("before_vectors_rename", "after_vectors_rename", "after_delta_rename", "after_base_rename",
                "after_data_rename"):
        # a vector file (a base .faiss, an ivf-disk base's .ivfdata or a .delta) moved into place, its
        # transaction not committed yet
        replace = os.replace
        ends = {"after_delta_rename": (".delta",), "after_base_rename": (".faiss",),
                "after_data_rename": (".ivfdata",)}.get(kind, (".faiss", ".delta"))

        def os_replace(src, dst, *a, **k):
            if kind == "before_vectors_rename" and is_vectors_file(dst):
                hit()
            out = replace(src, dst, *a, **k)
            if kind != "before_vectors_rename" and is_vectors_file(dst, ends):
                hit()
            return out

        os.replace = os_replace
    elif kind == "before_old_vectors_unlink":  # committed; the previous FAISS file not removed yet
        unlink = pathlib.Path.unlink

        def path_unlink(self, *a, **k):
            if is_vectors_file(self.name):
                hit()
            return unlink(self, *a, **k)

        pathlib.Path.unlink = path_unlink
    elif kind == "mid_add_transaction":  # some documents written, transaction not committed
        write = MetadataStore.write_document

        def write_document(self, *a, **k):
            out = write(self, *a, **k)
            hit()
            return out

        MetadataStore.write_document = write_document
    elif kind == "mid_rebuild":  # inside a passages_next transaction
        write = MetadataStore.write_next_passages

        def write_next_passages(self, *a, **k):
            out = write(self, *a, **k)
            hit()
            return out

        MetadataStore.write_next_passages = write_next_passages
    elif kind == "create_before_info":  # database and tables created, configuration not written
        set_info = MetadataStore.set_info

        def set_info_(self, values):
            hit()
            return set_info(self, values)

        MetadataStore.set_info = set_info_
    elif kind == "after_create":  # Index.create returned, the build has not started adding
        acquire = WriteLock.acquire

        def acquire_(self):
            hit()
            return acquire(self)

        WriteLock.acquire = acquire_
    elif kind == "between_renames":  # build --force without an atomic exchange: old index moved aside
        import index.storage.folder as folder

        folder.exchange = lambda a, b: False
        rename = os.rename

        def os_rename(src, dst, *a, **k):
            out = rename(src, dst, *a, **k)
            if os.path.abspath(str(src)) == os.path.abspath(cmd["index"]):
                hit()
            return out

        os.rename = os_rename
    elif kind == "after_exchange":  # build --force: new index swapped in, old one not yet removed
        import index.storage.folder as folder

        exchange = folder.exchange

        def exchange_(a, b):
            out = exchange(a, b)
            hit()
            return out

        folder.exchange = exchange_
    else:
        raise ValueError(kind)
    return None


def worker(cmd):
    fd = os.open(cmd["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    faiss.omp_set_num_threads(1)
    import index.options
    from index.indexer import Index
    index.options.DEFAULT_PRECISION = "fp32"  # the checks compare vectors with fp32 references
    index.options.DEFAULT_BACKEND = "torch"
    index.options.COMMIT_EVERY = cmd["commit_every"]
    if cmd.get("ivf_disk_min_training"):  # small enough for the tiny corpus to switch to ivf-disk
        index.ann.ivf_disk.IVFDiskIndex.min_training = cmd["ivf_disk_min_training"]
    hook = install_crash(cmd.get("crash"), cmd)
    say("start")
    docs = []
    if cmd.get("docs"):
        with open(cmd["docs"], encoding="utf-8") as f:
            docs = [json.loads(line) for line in f]
    def on_commit(ids):
        say("C " + json.dumps(ids))
        if hook:
            hook()

    mode = cmd["mode"]
    if mode == "add":
        Index.open(cmd["index"]).add(docs, on_commit=on_commit)
    elif mode == "build":
        Index.build(cmd["index"], docs, model=cmd["model"], force=cmd.get("force", False), on_commit=on_commit)
    elif mode == "rebuild":
        Index.open(cmd["index"]).rebuild(layer=cmd["layer"])
    elif mode == "delete":
        Index.open(cmd["index"]).delete(cmd["ids"])
    else:
        raise ValueError(mode)
    say("done")


print("ready", flush=True)
while True:
    line = sys.stdin.readline()
    if not line:
        break
    cmd = json.loads(line)
    if cmd["op"] == "run":
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                worker(cmd)
            except BaseException:
                say("error " + json.dumps(traceback.format_exc()))
                code = 1
            os._exit(code)
        print(json.dumps({"pid": pid}), flush=True)
    elif cmd["op"] == "reap":
        _, status = os.waitpid(cmd["pid"], 0)
        print(json.dumps({
            "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
            "code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
        }), flush=True)
'''


class ForkServer:
    """A warm Python that forks one writer process per command."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.stderr = open(folder / "zygote.err", "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", ZYGOTE], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self.stderr, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.workers: set[int] = set()
        self.n = 0
        assert self._read(180) == "ready", self._stderr()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def _stderr(self) -> str:
        self.stderr.flush()
        return (self.folder / "zygote.err").read_text(errors="replace")[-3000:]

    def _read(self, timeout: float) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"fork server silent for {timeout} s") from None
        if line is None:
            raise AssertionError(f"fork server died: {self._stderr()}")
        return line

    def _send(self, obj: dict) -> dict:
        self.proc.stdin.write(json.dumps(obj) + "\n")
        self.proc.stdin.flush()
        return json.loads(self._read(60))

    def start(self, **cmd) -> "Worker":
        self.n += 1
        out = self.folder / f"worker-{self.n}.out"
        cmd = {"op": "run", "commit_every": COMMIT_EVERY, "out": str(out), **cmd}
        started = time.monotonic()
        pid = self._send(cmd)["pid"]
        self.workers.add(pid)
        return Worker(self, pid, out, started)

    def reap(self, pid: int) -> dict:
        status = self._send({"op": "reap", "pid": pid})
        self.workers.discard(pid)
        return status

    def close(self) -> None:
        for pid in list(self.workers):  # only the writers this server forked for us
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=20)
        except Exception:
            self.proc.kill()
            self.proc.wait(timeout=20)
        self.stderr.close()


class Worker:
    def __init__(self, server: ForkServer, pid: int, out: Path, started: float):
        self.server, self.pid, self.out, self.started = server, pid, out, started
        self.status: dict | None = None

    def lines(self) -> list[str]:
        return self.out.read_text(encoding="utf-8", errors="replace").splitlines() if self.out.exists() else []

    def wait_for(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.lines()):
                return True
            time.sleep(0.01)
        return False

    def kill_and_reap(self) -> dict:
        if self.lines()[-1:] != ["done"]:  # a writer that said "done" is exiting by itself
            try:
                os.kill(self.pid, signal.SIGKILL)  # a zombie (already exited) ignores it
            except ProcessLookupError:
                pass
        self.status = self.server.reap(self.pid)
        return self.status

    def committed(self) -> set[str]:
        return {i for line in self.lines() if line.startswith("C ") for i in json.loads(line[2:])}

    def outcome(self) -> str:
        """"killed" or "done"; anything else (an exception in the writer) fails the test."""
        lines = self.lines()
        errors = [json.loads(l[6:]) for l in lines if l.startswith("error ")]
        assert not errors, f"writer {self.pid} failed:\n{errors[0]}"
        if self.status == {"signal": signal.SIGKILL, "code": None}:
            return "killed"
        assert self.status == {"signal": None, "code": 0} and lines[-1:] == ["done"], (self.status, lines[-5:])
        return "done"


@pytest.fixture(scope="module")
def fork_server(tmp_path_factory):
    server = ForkServer(tmp_path_factory.mktemp("fork-server"))
    yield server
    server.close()


# --- checks ----------------------------------------------------------------------------------
class Reference:
    """The documents of a test and their vectors at layers -2 and -1 (encoded once)."""

    def __init__(self, model: str, docs: list[dict]):
        self.model = model
        self.by_id = {d["id"]: d for d in docs}
        ids = list(self.by_id)
        self.vectors = {
            layer: dict(zip(ids, Encoder.load(model, layer=layer, max_length=MAX_LENGTH).encode(
                [self.by_id[i]["text"] for i in ids])))
            for layer in (-2, -1)
        }


def check_index(path: Path, ref: Reference, *, must_have=(), exact=None, layers=(-2,)) -> tuple[set[str], dict]:
    """Open ``path`` and check it completely; returns (stored document ids, recorded config)."""
    index = Index.open(path)
    try:
        cfg = index.config
        assert {"layer", "dimension", "model"} <= set(cfg), f"{path} opens but records no configuration: {cfg}"
        assert cfg["layer"] in layers, f"recorded layer {cfg['layer']}, expected one of {layers}"
        dim = int(cfg["dimension"])
        conn = index.store.conn
        # every passage row has exactly one vector and every vector a row
        rows: dict[int, np.ndarray] = {}
        for ids, vecs in index.store.iter_vectors(dim):
            rows.update(zip(ids.tolist(), vecs))
        vectors = index.vectors
        faiss_ids = vectors.ids().tolist()
        assert len(faiss_ids) == len(set(faiss_ids)), "a passage id appears twice in FAISS"
        assert set(faiss_ids) == set(rows), (
            f"FAISS ids and passage rows differ: {len(set(faiss_ids) - set(rows))} vectors without a row, "
            f"{len(set(rows) - set(faiss_ids))} rows without a vector")
        n_docs, n_passages = index.store.counts()
        assert vectors.ntotal == n_passages == len(rows)
        orphans = conn.execute(
            "SELECT count(*) FROM passages WHERE document_id NOT IN (SELECT id FROM documents)").fetchone()[0]
        assert orphans == 0, f"{orphans} passages of no document"
        stored = {r[0] for r in conn.execute("SELECT id FROM documents")}
        assert len(stored) == n_docs
        # only input documents; one passage each (they are short); the committed ones are there
        assert stored <= set(ref.by_id), f"unknown documents: {sorted(stored - set(ref.by_id))[:5]}"
        assert n_passages == n_docs, "a short document must have exactly one passage"
        missing = set(must_have) - stored
        assert not missing, f"{len(missing)} committed documents are missing, e.g. {sorted(missing)[:5]}"
        if exact is not None:
            assert stored == set(exact), (len(stored), len(set(exact)))
        texts = index.store.documents(sorted(stored))
        for doc_id, (text, meta) in texts.items():
            assert (text, meta) == (ref.by_id[doc_id]["text"], ref.by_id[doc_id]["metadata"])
        # the vectors are those of the recorded layer (and not of the other one)
        layer = cfg["layer"]
        other = -1 if layer == -2 else -2
        owner = {pid: doc_id for pid, (doc_id, _) in index.store.passages(list(rows)).items()}
        for pid, vec in rows.items():
            doc_id = owner[pid]
            assert 1 - float(vec @ ref.vectors[layer][doc_id]) < SAME, f"{doc_id}: not a layer {layer} vector"
            assert 1 - float(vec @ ref.vectors[other][doc_id]) > OTHER, f"{doc_id}: a layer {other} vector"
        # every stored document is found first, score ~1, by its exact text ...
        searcher = Searcher(index)
        order = sorted(stored)
        if order:  # (search_many([]) is not supported: the tokenizer fails on an empty batch)
            for doc_id, hits in zip(order, searcher.search_many([ref.by_id[i]["text"] for i in order], k=3)):
                assert hits and hits[0].id == doc_id, (doc_id, [(h.id, h.score) for h in hits])
                assert abs(hits[0].score - 1.0) < 1e-4, (doc_id, hits[0].score)
            # ... and by the recorded layer's vector of it, computed independently
            sample = order[:: max(1, len(order) // 10)]
            found = searcher.search_vectors(np.stack([ref.vectors[layer][i] for i in sample]), k=1)
            assert [h[0].id for h in found] == sample
            assert all(abs(h[0].score - 1.0) < 1e-5 for h in found)
        return stored, cfg
    finally:
        index.close()


def check_chunk_prefix(stored: set[str], order: list[str], chunk: int = COMMIT_EVERY) -> None:
    """Commits are atomic and in input order: the stored set is a whole number of chunks."""
    n = len(stored)
    assert stored == set(order[:n]), "the stored documents are not the first ones of the input"
    assert n % chunk == 0 or n == len(order), f"{n} documents stored: a chunk was committed in part"


def check_final_files(path: Path) -> None:
    """After a completed write exactly the committed state's vector files are left: its base and
    the deltas after it."""
    index = Index.open(path)
    try:
        generation = index.store.generation()
        base = base_generation(index.store.get_info(), generation)
        chain = set(chain_names(base, generation))
        if index.vectors.kind == "ivf-disk":
            chain.add(data_name(base))
        present = {p.name for p in [*vector_files(path).values(), *data_files(path).values(),
                                    *delta_files(path).values()]}
        assert present == chain, (present, chain)
        leftovers = list(path.parent.glob(f".{path.name}.*"))  # staging, old or half-made folders
        assert not leftovers, leftovers
    finally:
        index.close()


def rerun_add(path: Path, docs: list[dict], monkeypatch) -> "AddResult":
    monkeypatch.setattr(options_module, "COMMIT_EVERY", COMMIT_EVERY)
    index = Index.open(path)
    try:
        return index.add(docs)
    finally:
        index.close()


# --- random kills ---------------------------------------------------------------------------
MIN_ADD_KILLS = 12
MIN_REBUILD_KILLS = 8
EXTRA_BUDGET_S = 45.0  # after the minimum trials, more kills while the test is younger than this
MAX_EXTRA = 10


@pytest.mark.slow
def test_random_sigkill_of_add_and_rebuild(fork_server, tiny_model, tmp_path, monkeypatch, fast_faiss):
    started = time.monotonic()
    rng = random.Random(20240611)
    docs = make_docs(N_DOCS, seed=1)
    ref = Reference(tiny_model, docs)
    order = [d["id"] for d in docs]
    docs_file = write_jsonl(tmp_path / "docs.jsonl", with_repeats(docs, N_REPEATS))

    # A base index for rebuilds, and an empty one per add trial (copied: cheap).
    empty = tmp_path / "empty"
    Index.create(empty, model=tiny_model).close()
    rebuild_path = tmp_path / "rb"
    with Index.create(rebuild_path, model=tiny_model) as base:
        base.add(docs)

    def fresh(name: str) -> Path:
        shutil.copytree(empty, tmp_path / name)
        return tmp_path / name

    def add_trial(n: int, delay: float | None) -> str:
        path = fresh(f"add-{n}")
        worker = fork_server.start(mode="add", index=str(path), docs=str(docs_file))
        if delay is None:
            assert worker.wait_for(lambda lines: "done" in lines or any(l.startswith("error") for l in lines), 120)
        else:
            time.sleep(delay)
        worker.kill_and_reap()
        outcome = worker.outcome()
        committed = worker.committed()
        stored, _ = check_index(path, ref, must_have=committed)
        check_chunk_prefix(stored, order)
        if outcome == "done":
            assert stored == set(order)
        result = rerun_add(path, docs + docs[:N_REPEATS], monkeypatch)
        assert (result.added, result.updated) == (N_DOCS - len(stored), 0), "the rerun re-added documents"
        assert result.unchanged == len(stored) + N_REPEATS
        check_index(path, ref, exact=order)
        check_final_files(path)
        shutil.rmtree(path)
        return "none" if not stored else "all" if len(stored) == N_DOCS else "part"

    def rebuild_trial(delay: float | None) -> tuple[str, int, int]:
        with Index.open(rebuild_path) as index:
            old = index.config["layer"]
        new = -1 if old == -2 else -2
        worker = fork_server.start(mode="rebuild", index=str(rebuild_path), layer=new)
        if delay is None:
            assert worker.wait_for(lambda lines: "done" in lines or any(l.startswith("error") for l in lines), 120)
        else:
            time.sleep(delay)
        worker.kill_and_reap()
        outcome = worker.outcome()
        _, cfg = check_index(rebuild_path, ref, exact=order, layers=(old, new))
        if outcome == "done":
            assert cfg["layer"] == new
        with Index.open(rebuild_path) as index:
            result = index.rebuild(layer=new)
        assert result.documents == N_DOCS
        check_index(rebuild_path, ref, exact=order, layers=(new,))
        check_final_files(rebuild_path)
        return outcome, old, cfg["layer"]

    # Calibrate: how long each job takes from the fork (model loading included).
    t = time.monotonic()
    assert add_trial(0, None) == "all"
    add_seconds = time.monotonic() - t
    t = time.monotonic()
    assert rebuild_trial(None)[0] == "done"
    rebuild_seconds = time.monotonic() - t
    # The job alone is shorter than the trial (which includes the checks): measure the job.
    w = fork_server.start(mode="add", index=str(fresh("calibrate")), docs=str(docs_file))
    assert w.wait_for(lambda lines: any(l.startswith("C ") for l in lines), 120)
    first_commit = time.monotonic() - w.started  # model loading and the first chunk
    assert w.wait_for(lambda lines: "done" in lines, 120)
    add_job = time.monotonic() - w.started
    w.kill_and_reap()
    assert w.outcome() == "done"
    with Index.open(rebuild_path) as index:
        layer = -1 if index.config["layer"] == -2 else -2
    w = fork_server.start(mode="rebuild", index=str(rebuild_path), layer=layer)
    assert w.wait_for(lambda lines: "done" in lines, 120)
    rebuild_job = time.monotonic() - w.started
    w.kill_and_reap()
    assert w.outcome() == "done"

    # Kill delays stratified over [start, end]: some during model loading, some mid-way,
    # some near or after the end.
    def delays(k: int, start: float, end: float) -> list[float]:
        out = [start + (end - start) * (i + rng.random()) / k for i in range(k)]
        rng.shuffle(out)
        return out

    add_outcomes, rebuild_outcomes = [], []
    # a third before the first commit is durable (model loading, first chunk), the rest after
    add_delays = delays(MIN_ADD_KILLS // 3, 0, first_commit) + delays(
        MIN_ADD_KILLS - MIN_ADD_KILLS // 3, first_commit, 1.05 * add_job)
    rng.shuffle(add_delays)
    rebuild_delays = delays(MIN_REBUILD_KILLS, 0, 1.1 * rebuild_job)
    for i in range(max(MIN_ADD_KILLS, MIN_REBUILD_KILLS)):
        if i < MIN_ADD_KILLS:
            add_outcomes.append(add_trial(i + 1, add_delays[i]))
        if i < MIN_REBUILD_KILLS:
            rebuild_outcomes.append(rebuild_trial(rebuild_delays[i]))
    extra = 0
    while extra < MAX_EXTRA and time.monotonic() - started < EXTRA_BUDGET_S:
        extra += 1
        add_outcomes.append(add_trial(100 + extra, rng.uniform(0, 1.1 * add_job)))
        rebuild_outcomes.append(rebuild_trial(rng.uniform(0, 1.1 * rebuild_job)))

    leftovers = sorted(p.name for p in tmp_path.rglob(".vectors-*.tmp-*"))
    print(f"\n{len(add_outcomes)} add kills {add_outcomes}; {len(rebuild_outcomes)} rebuild kills "
          f"{rebuild_outcomes}; add job {add_job:.2f} s (first commit {first_commit:.2f} s), rebuild job {rebuild_job:.2f} s; "
          f"calibration trials {add_seconds:.1f} s / {rebuild_seconds:.1f} s; "
          f"{time.monotonic() - started:.0f} s in all; leftover temporary FAISS files: {leftovers}")
    assert len(add_outcomes) + len(rebuild_outcomes) >= 20
    # The kills were spread: some before anything was committed, some part-way through.
    assert "none" in add_outcomes and "part" in add_outcomes, add_outcomes
    assert any(o == "killed" and old == after for o, old, after in rebuild_outcomes), rebuild_outcomes


# --- deterministic crash points ---------------------------------------------------------------
CRASH_POINTS = {
    # name: (mode, crash spec, how the index is prepared: empty / full (300 docs) / none)
    "add-in-on-commit": ("add", {"kind": "on_commit", "n": 3}, "empty"),
    "add-faiss-temp-written": ("add", {"kind": "before_vectors_rename", "n": 4}, "empty"),
    "add-faiss-renamed": ("add", {"kind": "after_vectors_rename", "n": 4}, "empty"),
    "add-before-old-faiss-removed": ("add", {"kind": "before_old_vectors_unlink", "n": 3}, "empty"),
    "add-delta-renamed": ("add", {"kind": "after_delta_rename", "n": 3}, "empty"),
    "add-compacted-base-renamed": ("add", {"kind": "after_base_rename", "n": 3}, "empty"),
    "delete-delta-renamed": ("delete", {"kind": "after_delta_rename", "n": 1}, "full"),
    "add-mid-transaction": ("add", {"kind": "mid_add_transaction", "n": 50}, "empty"),
    "rebuild-mid-side-table": ("rebuild", {"kind": "mid_rebuild", "n": 270}, "full"),
    "rebuild-faiss-renamed": ("rebuild", {"kind": "after_vectors_rename", "n": 1}, "full"),
    "rebuild-before-old-faiss-removed": ("rebuild", {"kind": "before_old_vectors_unlink", "n": 1}, "full"),
    "build-mid-add": ("build", {"kind": "on_commit", "n": 3}, "none"),
    "build-during-create": ("build", {"kind": "create_before_info", "n": 1}, "none"),
    "build-after-create": ("build", {"kind": "after_create", "n": 1}, "none"),
    "build-force-between-renames": ("build-force", {"kind": "between_renames", "n": 1}, "full"),
    "build-force-after-exchange": ("build-force", {"kind": "after_exchange", "n": 1}, "full"),
    # ivf-disk: a base is a data file (renamed first) and its header; later commits are deltas
    "ivf-disk-add-data-renamed": ("add", {"kind": "after_data_rename", "n": 1}, "empty ivf-disk"),
    "ivf-disk-add-compacted-base-renamed": ("add", {"kind": "after_base_rename", "n": 3}, "empty ivf-disk"),
    "ivf-disk-add-delta-renamed": ("add", {"kind": "after_delta_rename", "n": 2}, "empty ivf-disk"),
    "ivf-disk-delete-delta-renamed": ("delete", {"kind": "after_delta_rename", "n": 1}, "full ivf-disk"),
    "ivf-disk-rebuild-data-renamed": ("rebuild", {"kind": "after_data_rename", "n": 1}, "full ivf-disk"),
}
IVF_DISK_MIN_TRAINING = 64  # vectors: the 300 tiny documents switch to ivf-disk after a few commits


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CRASH_POINTS))
def test_kill_at_crash_point(name, fork_server, tiny_model, tmp_path, monkeypatch, fast_faiss):
    """The writer SIGKILLs itself at one precise point; then the same checks and a rerun."""
    mode, crash, prepared = CRASH_POINTS[name]
    docs = make_docs(N_DOCS, seed=1)
    new_docs = make_docs(100, seed=2, prefix="n")  # what build --force replaces the index with
    ref = Reference(tiny_model, docs + new_docs)
    order = [d["id"] for d in docs]
    path = tmp_path / "idx"
    prepared, _, kind = prepared.partition(" ")
    if kind:
        monkeypatch.setattr(IVFDiskIndex, "min_training", IVF_DISK_MIN_TRAINING)
    if prepared != "none":
        with Index.create(path, model=tiny_model, index_type=kind or "flat") as index:
            if prepared == "full":
                index.add(docs)
    job_docs = new_docs if mode == "build-force" else docs
    docs_file = write_jsonl(tmp_path / "docs.jsonl", job_docs)
    cmd = {"index": str(path), "crash": crash, "model": tiny_model}
    if kind:
        cmd["ivf_disk_min_training"] = IVF_DISK_MIN_TRAINING
    deleted = order[:50]
    if mode == "rebuild":
        cmd.update(mode="rebuild", layer=-1)
    elif mode == "delete":
        cmd.update(mode="delete", ids=deleted)
    elif mode == "build-force":
        cmd.update(mode="build", force=True, docs=str(docs_file))
    else:
        cmd.update(mode=mode, docs=str(docs_file))
    worker = fork_server.start(**cmd)
    assert worker.wait_for(lambda lines: any(l.split()[0] in ("crash", "done", "error") for l in lines if l), 120)
    worker.kill_and_reap()
    assert worker.outcome() == "killed" and f"crash {crash['kind']}" in worker.lines(), worker.lines()[-3:]
    committed = worker.committed()

    if mode == "build" and not path.exists():  # killed while creating: nothing was made at the path
        assert not committed
        index, result = Index.build(path, docs, model=tiny_model)
        index.close()
        assert result.added == N_DOCS
        check_index(path, ref, exact=order)
    elif mode in ("add", "build"):
        assert path.exists(), "the index folder is gone"
        stored, _ = check_index(path, ref, must_have=committed)
        check_chunk_prefix(stored, order)
        if mode == "add":
            result = rerun_add(path, docs, monkeypatch)
        else:  # the interrupted build is resumed (complete is false) or, if nothing was built, done
            monkeypatch.setattr(options_module, "COMMIT_EVERY", COMMIT_EVERY)
            index, result = Index.build(path, docs, model=tiny_model)
            index.close()
        assert (result.added, result.updated) == (N_DOCS - len(stored), 0)
        check_index(path, ref, exact=order)
    elif mode == "rebuild":
        check_index(path, ref, exact=order, layers=(-2, -1))
        with Index.open(path) as index:
            index.rebuild(layer=-1)
        check_index(path, ref, exact=order, layers=(-1,))
    elif mode == "delete":  # all of the delete or none of it, then the delete again
        stored, _ = check_index(path, ref)
        kept = [d for d in order if d not in set(deleted)]
        assert stored in (set(order), set(kept))
        with Index.open(path) as index:
            index.delete(deleted)
        check_index(path, ref, exact=kept)
    else:  # build --force: the old index until the new one is complete, then the new one
        # Linux swaps the folders atomically; without that, a crash between the two renames
        # leaves the old index aside, and the next open puts it back.
        Index.open(path).close()
        assert Path(path).exists(), "build --force killed: no index left at the path"
        stored, _ = check_index(path, ref)
        assert stored in (set(order), {d["id"] for d in new_docs})
        index, _ = Index.build(path, new_docs, model=tiny_model, force=True)
        index.close()
        check_index(path, ref, exact=[d["id"] for d in new_docs])
    check_final_files(path)


# --- the command line, killed mid-way -------------------------------------------------------
CLI = ("import sys; import index.options as m; m.COMMIT_EVERY = int(sys.argv.pop(1)); "
       "from cli import main; sys.argv[0] = 'semsearch'; main()")


def _count_documents(db: Path) -> int:
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1.0)
        try:
            return conn.execute("SELECT count(*) FROM documents").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_cli_index_add_killed_midway_then_rerun(tiny_model, tmp_path, monkeypatch, fast_faiss):
    """``semsearch index add FILE --index DIR`` SIGKILLed (during start-up, after ~1/5 and
    after ~2/3 of the documents), then the same command again: every document once."""
    docs = make_docs(N_DOCS, seed=3, prefix="c")
    ref = Reference(tiny_model, docs)
    order = [d["id"] for d in docs]
    source = write_jsonl(tmp_path / "docs.jsonl", with_repeats(docs, N_REPEATS))
    triggers = {"startup": ("seconds", 1.0), "fifth": ("documents", 60), "two-thirds": ("documents", 200)}
    paths = {}
    for name in triggers:
        paths[name] = tmp_path / name
        Index.create(paths[name], model=tiny_model).close()

    def command(name):
        return [sys.executable, "-c", CLI, str(COMMIT_EVERY), "index", "add", str(source),
                "--index", str(paths[name]), "--quiet"]

    # three commands at once on a small machine: one OpenMP thread each (no oversubscription)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    procs: dict[str, subprocess.Popen] = {}
    try:
        started = time.monotonic()
        for name in triggers:
            procs[name] = subprocess.Popen(command(name), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                           stderr=subprocess.PIPE, text=True)
        pending = set(triggers)
        while pending and time.monotonic() - started < 120:
            for name in list(pending):
                kind, value = triggers[name]
                if procs[name].poll() is not None:
                    pending.discard(name)
                elif (kind == "seconds" and time.monotonic() - started >= value) or (
                        kind == "documents" and _count_documents(paths[name] / DB_NAME) >= value):
                    procs[name].send_signal(signal.SIGKILL)
                    pending.discard(name)
            time.sleep(0.01)
        for name, proc in procs.items():
            _, err = proc.communicate(timeout=30)
            assert proc.returncode == -signal.SIGKILL, f"{name}: not killed mid-way (rc {proc.returncode}): {err}"
        stored_after_kill = {}
        for name in triggers:
            stored, _ = check_index(paths[name], ref)
            check_chunk_prefix(stored, order)
            stored_after_kill[name] = len(stored)
        assert stored_after_kill["startup"] == 0
        assert 60 <= stored_after_kill["fifth"] < N_DOCS and 200 <= stored_after_kill["two-thirds"] < N_DOCS

        # The same command again, to completion: one as a fresh process, the others in this
        # process through click's runner (same command line, no 5 s start-up each).
        procs["two-thirds"] = subprocess.Popen(command("two-thirds"), cwd=ROOT, env=env,
                                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        reports = {}
        monkeypatch.setattr(options_module, "COMMIT_EVERY", COMMIT_EVERY)
        for name in ("startup", "fifth"):
            result = CliRunner().invoke(cli, command(name)[4:])
            assert result.exit_code == 0, result.output
            reports[name] = result.stderr
        _, reports["two-thirds"] = procs["two-thirds"].communicate(timeout=120)
        assert procs["two-thirds"].returncode == 0, reports["two-thirds"]
        for name in triggers:
            before = stored_after_kill[name]
            assert f"{N_DOCS - before} added, 0 updated, {before + N_REPEATS} unchanged" in reports[name], reports[name]
            check_index(paths[name], ref, exact=order)
            check_final_files(paths[name])
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
