"""Generated damage to every on-disk format: a refusal in one line or a self-heal, never a crash, a
hang, a wrong answer or a lost document.

Pristine indexes (flat, hnsw, ivf, ivf-disk, and flat with a BM25 folder) are written through the
real writer with a deterministic fake encoder (``tests/fake_engine.py``): a base, then deltas of
adds and deletes. Each has a twin with the same ids and history (so the same file names) but other
texts, and a copy taken at an earlier generation. The damage, generated from a seed, hits every
file of the committed state (the FAISS base, the ``.ivfdata`` lists, the ``.delta`` files, every
file of the ``bm25-<g>/`` folder) and the SQLite ``info`` table's values:

- truncation at every byte-boundary class (empty, one byte, inside the magic, inside the header,
  the middle, the last word, one byte short), and at random lengths;
- bit flips at random offsets; a wrong length (bytes appended);
- a wrong generation (the file of an earlier generation of the same index under this name);
- files swapped between two indexes (the twin's file under the same name);
- ``info`` values replaced by wrong types, out-of-range numbers and text that is not JSON.

The loader runs in a child process (one for all cases, fed index copies on stdin, each answer
awaited with a timeout), so a segfault or a hang in FAISS, numpy or bm25s fails the test instead
of killing the run. Each answer must be the pristine index's (same hits, same scores, vector and
BM25 rankings) or a ``SemsearchError`` of one line; and the documents SQLite holds are compared
with the pristine ones after every case. The fast suite runs a seeded sample (every target and
every kind of damage at least once); the ``slow`` test runs every generated case.
"""

from __future__ import annotations

import json
import os
import random
import select
import shutil
import sqlite3
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from index import Index
from fake_engine import FakeEngine, fake_vector

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("flat", "hnsw", "ivf", "ivf-disk", "hybrid")
N_DOCS = 700  # ivf and ivf-disk train from 624 vectors
WORDS = "bank river money boat sea fox cat mat apple fruit password reset account invoice".split()
BM25_QUERIES = ["money in the bank", "a fox and a cat", "reset my account password"]
ANSWER_SECONDS = 120  # per case, generous: a loaded machine, a cold child

CHILD = r"""
import json, sys, traceback
sys.path.insert(0, sys.argv[1])
import numpy as np
from index import Index, SemsearchError
from search import Searcher
queries = np.load(sys.argv[2])
bm25_queries = json.loads(sys.argv[3])
print(json.dumps({"outcome": "ready"}), flush=True)
for line in sys.stdin:
    path, bm25 = line.split()
    bm25 = bm25 == "bm25"
    try:
        with Index.open(path) as index:
            searcher = Searcher(index, ef_search=4096, nprobe=4096)
            out = {"outcome": "served",
                   "hits": [[[h.id, h.score] for h in row] for row in searcher.search_vectors(queries, k=5)]}
            if bm25:
                out["bm25"] = [[[h.id, h.score] for h in row] for row in searcher.search_bm25(bm25_queries, k=5)]
    except SemsearchError as exc:
        out = {"outcome": "refused", "message": str(exc)}
    except BaseException:
        out = {"outcome": "crash", "error": traceback.format_exc()}
    print(json.dumps(out), flush=True)
"""


def text_of(i: int, twin: bool) -> str:
    rng = random.Random(i * 2 + twin)
    return " ".join(rng.choice(WORDS) for _ in range(5)) + f" {'twin' if twin else 'doc'} {i}"


def write_history(path: Path, kind: str, empty: Path, twin: bool, earlier: Path) -> None:
    """From a copy of the ``empty`` index: a base of ``N_DOCS``, then three deltas (adds, a delete
    with upserts, adds); a copy of the folder after the first delta goes to ``earlier``."""
    shutil.copytree(empty, path)
    index = Index.open(path)
    if kind not in ("flat", "hybrid"):
        index.rebuild(index_type=kind)
    empty_base = next(path.glob("vectors-*.faiss")).read_bytes()  # an empty generation's
    engine = FakeEngine()
    docs = lambda ids: [{"id": f"d{i}", "text": text_of(i, twin), "metadata": {"n": i % 3}} for i in ids]  # noqa: E731
    index.add(docs(range(N_DOCS)), engine=engine)
    index.add(docs(range(N_DOCS, N_DOCS + 5)), engine=engine)
    index.close()
    shutil.copytree(path, earlier)
    (earlier / "vectors-0.faiss").write_bytes(empty_base)
    index = Index.open(path)
    index.delete(["d1", "d2", "d3"])
    index.add([{"id": "d4", "text": text_of(4, not twin)}, *docs(range(N_DOCS + 5, N_DOCS + 10))], engine=engine)
    index.close()


@dataclass
class Pristine:
    path: Path
    twin: Path
    earlier: Path
    answer: dict
    documents: list


@pytest.fixture(scope="module")
def pristine(tiny_model, tmp_path_factory):
    """Every kind of index, its twin and its earlier copy, with the child's answer on each."""
    pytest.importorskip("bm25s", reason="the hybrid extra (bm25s) is needed for the bm25-<g>/ folder")
    root = tmp_path_factory.mktemp("pristine")
    for hybrid in (False, True):
        Index.create(root / f"empty-{hybrid}", model=tiny_model, hybrid=hybrid).close()
    out = {}
    for kind in KINDS:
        for twin in (False, True):
            write_history(root / f"{kind}-{twin}", kind, root / f"empty-{kind == 'hybrid'}", twin,
                          root / f"{kind}-{twin}-earlier")
        out[kind] = Pristine(root / f"{kind}-False", root / f"{kind}-True", root / f"{kind}-False-earlier", {},
                             documents(root / f"{kind}-False"))
        assert list(out[kind].path.glob("vectors-*.delta")), f"{kind}: the history should leave deltas"
    with Loader(root, tiny_model) as loader:
        for kind, p in out.items():
            p.answer = loader.answer(p.path, kind == "hybrid")
            assert p.answer["outcome"] == "served", p.answer
    return out


def documents(path: Path) -> list:
    conn = sqlite3.connect(f"file:{path / 'semsearch.db'}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT id, text, metadata FROM documents ORDER BY id").fetchall()
    finally:
        conn.close()


class Loader:
    """The child process that opens and searches an index per line of stdin."""

    def __init__(self, work: Path, model: str):
        dimension = int(Index.open(next(work.glob("flat-False"))).config["dimension"])
        self.queries = work / "queries.npy"
        np.save(self.queries, np.stack([fake_vector(f"query {i}", dimension) for i in range(4)]))
        self.proc = None
        self.start()

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen([sys.executable, "-c", CHILD, str(ROOT), str(self.queries),
                                      json.dumps(BM25_QUERIES)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, env=env)
        assert self.read()["outcome"] == "ready"

    def read(self) -> dict:
        ready, _, _ = select.select([self.proc.stdout], [], [], ANSWER_SECONDS)
        if not ready:
            self.proc.kill()
            self.proc.wait()
            return {"outcome": "hang"}
        line = self.proc.stdout.readline()
        if not line:
            return {"outcome": "crash", "error": f"the loader died (exit status {self.proc.wait()})"}
        return json.loads(line)

    def answer(self, path: Path, bm25: bool) -> dict:
        """The child's answer on the index at ``path`` (``bm25``: BM25 rankings too)."""
        if self.proc.poll() is not None:
            self.start()
        self.proc.stdin.write(f"{path} {'bm25' if bm25 else 'vectors'}\n")
        self.proc.stdin.flush()
        got = self.read()
        if got["outcome"] in ("hang", "crash") and self.proc.poll() is not None:
            self.start()  # a fresh child for the next case
        return got

    def __enter__(self) -> "Loader":
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(30)


# --- the damage ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    kind: str  # which pristine index
    target: str  # a file name (relative to the index folder) or "info:<key>"
    damage: str  # what is done to it
    arg: int | str = 0

    def __str__(self) -> str:
        return f"{self.kind} {self.target} {self.damage} {self.arg}"


BOUNDARIES = ("empty", "one byte", "magic", "header", "middle", "last word", "one short")
BAD_INFO = ("not json {", "null", '"x"', "-1", "64", "1000000000000", "[]", '{"a": 1}', "1.5", '""')
INFO_KEYS = ("generation", "vectors_base", "dimension", "index_type", "vector_seals", "next_passage_id",
             "layer", "pooling", "max_length", "search_tuning", "passage_overlap", "hybrid", "complete")


def targets(p: Pristine) -> list[str]:
    files = sorted(str(f.relative_to(p.path)) for f in p.path.rglob("*")
                   if f.is_file() and (f.name.startswith("vectors-") or f.parent.name.startswith("bm25-")))
    return files + [f"info:{key}" for key in INFO_KEYS]


def all_cases(pristine: dict, flips: int, seed: int) -> list[Case]:
    rng = random.Random(seed)
    cases = []
    for kind, p in pristine.items():
        for target in targets(p):
            if target.startswith("info:"):
                cases += [Case(kind, target, "info", value) for value in BAD_INFO]
                continue
            size = (p.path / target).stat().st_size
            cases += [Case(kind, target, "truncate", b) for b in BOUNDARIES]
            cases += [Case(kind, target, "truncate", rng.randrange(size)) for _ in range(2)]
            cases += [Case(kind, target, "flip", rng.randrange(size * 8)) for _ in range(flips)]
            cases += [Case(kind, target, "extend", rng.randrange(1, 64)), Case(kind, target, "swap"),
                      Case(kind, target, "earlier generation")]
        for folder in sorted(p.path.glob("bm25-*")):  # the twin's whole folder, its files consistent
            cases.append(Case(kind, folder.name, "swap folder"))
    return cases


def cut(size: int, where) -> int:
    if isinstance(where, int):
        return where
    return {"empty": 0, "one byte": 1, "magic": min(4, size - 1), "header": min(24, size - 1),
            "middle": size // 2, "last word": max(0, size - 8), "one short": size - 1}[where]


def damage(folder: Path, case: Case, p: Pristine) -> bool:
    """Apply ``case`` to the copy at ``folder``; False when it does not apply (no such earlier file)."""
    if case.damage == "info":
        conn = sqlite3.connect(folder / "semsearch.db")
        with conn:
            conn.execute("INSERT INTO info (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = ?",
                         (case.target[5:], case.arg, case.arg))
        conn.close()
        return True
    path = folder / case.target
    if case.damage == "swap folder":
        shutil.rmtree(path)
        shutil.copytree(p.twin / case.target, path)
        return True
    data = bytearray(path.read_bytes())
    if case.damage == "truncate":
        data = data[:cut(len(data), case.arg)]
    elif case.damage == "flip":
        data[case.arg // 8] ^= 1 << (case.arg % 8)
    elif case.damage == "extend":
        data += random.Random(case.arg).randbytes(case.arg)
    elif case.damage == "swap":
        data = (p.twin / case.target).read_bytes()
    elif case.damage == "earlier generation":  # another generation's file of this index, under this name
        pattern = f"bm25-*/{path.name}" if path.parent.name.startswith("bm25-") else f"vectors-*{path.suffix}"
        older = [f for f in sorted(p.earlier.glob(pattern)) if f.read_bytes() != data]
        if not older:
            return False
        data = older[-1].read_bytes()
    path.write_bytes(bytes(data))
    return True


def judged(case: Case, got: dict, p: Pristine, folder: Path) -> str:
    """'served' or 'refused' when the answer keeps the contract; raises AssertionError otherwise."""
    assert got["outcome"] in ("served", "refused"), f"{case}: {got}"
    if got["outcome"] == "refused":
        message = got["message"]
        assert message and "\n" not in message.strip() and "Traceback" not in message, f"{case}: {message!r}"
    else:
        for key in ("hits", "bm25"):
            want, have = p.answer.get(key), got.get(key)
            assert (want is None) == (have is None), f"{case}: {key} {have} != {want}"
            if want is not None:
                assert [[h[0] for h in row] for row in have] == [[h[0] for h in row] for row in want], \
                    f"{case}: wrong {key} answer"
                assert np.allclose([h[1] for row in have for h in row], [h[1] for row in want for h in row],
                                   atol=1e-4), f"{case}: wrong {key} scores"
    assert documents(folder) == p.documents, f"{case}: stored documents changed"
    return got["outcome"]


def run_cases(pristine: dict, cases: list[Case], work: Path, model: str) -> Counter:
    tally: Counter = Counter()
    failures = []
    with Loader(next(iter(pristine.values())).path.parent, model) as loader:
        for n, case in enumerate(cases):
            p = pristine[case.kind]
            folder = work / f"case-{n}"
            shutil.copytree(p.path, folder)
            if not damage(folder, case, p):
                tally["not applicable"] += 1
                shutil.rmtree(folder, ignore_errors=True)
                continue
            try:
                tally[judged(case, loader.answer(folder, case.kind == "hybrid"), p, folder)] += 1
            except AssertionError as exc:
                failures.append(str(exc).splitlines()[0][:400])
            shutil.rmtree(folder, ignore_errors=True)
    tally["cases"] = len(cases)
    print(f"generated damage: {dict(tally)}")
    assert not failures, f"{len(failures)} of {len(cases)} cases broke the contract:\n" + "\n".join(failures[:30])
    return tally


def test_every_format_survives_a_sample_of_generated_damage(pristine, tiny_model, tmp_path):
    cases = all_cases(pristine, flips=1, seed=0)
    # Every (kind, target) with one damage each, rotating through the kinds of damage, plus every kind
    # of damage on every file class: bounded for the fast suite.
    by_target: dict = {}
    for case in cases:
        by_target.setdefault((case.kind, case.target), []).append(case)
    rng = random.Random(0)
    sample = [rng.choice(group) for group in by_target.values()]
    kinds_of_damage = {(c.damage, c.target.split("-")[0].split(".")[-1]) for c in sample}
    for case in cases:
        key = (case.damage, case.target.split("-")[0].split(".")[-1])
        if key not in kinds_of_damage:
            kinds_of_damage.add(key)
            sample.append(case)
    run_cases(pristine, sample, tmp_path, tiny_model)


@pytest.mark.slow
def test_every_format_survives_every_generated_damage(pristine, tiny_model, tmp_path):
    run_cases(pristine, all_cases(pristine, flips=8, seed=1), tmp_path, tiny_model)
