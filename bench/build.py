"""Index build cost: wall time and peak memory of `semsearch index build`, and bytes per stored vector.

Part 1 writes the first N SciFact abstracts (../shared/data/scifact/corpus.jsonl)
to a temporary JSONL and runs ``semsearch index build`` on it in a separate
child process, at two corpus sizes (default 1,000 and 2,000; --quick 150 and
300). It reports documents, passages (from ``semsearch index info --json``),
wall seconds of the whole process (Python start, model load and encoding),
docs/s, and the child's peak RSS (VmHWM, read by the child itself just before
it exits). Documents are committed in chunks of ``COMMIT_EVERY``, so peak
memory should stay flat as the corpus grows: the peak RSS ratio between the
two sizes shows it. ``--types`` adds other index types, built at the larger size.

Part 2 builds each FAISS index type (flat, hnsw, ivf, ivfpq) over N synthetic
384-d unit vectors (default 100,000; --quick 20,000; seeded) with
``index.ann.registry.build``, saves it, and reports file bytes / N and build seconds.
ivfpq needs at least 9,984 vectors to train; below that it stays flat. It also
reports the SQLite bytes per passage that semsearch stores in addition
(``semsearch.db`` / passages of the larger part-1 index; each row holds a
1,536-byte float32 vector blob, the passage text and offsets).
Part 3 (``--storage N ...``, alone) times storage, not the model: N
one-passage documents go through the real ``Index.add`` path (commits of
``COMMIT_EVERY``, SQLite rows, vector files) with the encoder replaced by a
deterministic fake, in a child process. It reports the bytes of vector files
written (bases and deltas) against the final vector files' size, commit
times, peak RSS, and the commit time of single-document adds to the finished
index (no encoding in it). ``--full-rewrite`` forces a new base at every
commit, as before deltas, to compare.

Prints tables and one JSON line.

    python bench/build.py --storage 100000 1000000
    python bench/build.py --delete-cycle 100000
    python bench/build.py --quick
    python bench/build.py --sizes 1000 2000 --types flat hnsw --vectors 100000
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hostinfo import cpu_info, cpu_line, encoder_runs, runs_line  # noqa: E402  (bench/ is on sys.path as the script's folder)

from index.ann.registry import backend, build  # noqa: E402
from index.options import COMMIT_EVERY, VECTOR_BACKENDS  # noqa: E402
from index.storage.store import DB_NAME  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
SCIFACT = Path("scifact") / "corpus.jsonl"
DIMENSION = 384
VECTOR_TYPES = tuple(VECTOR_BACKENDS)

# Runs the semsearch CLI in this child process and reports its own peak RSS on stderr.
# VmHWM is the high-water mark of this process's memory after exec, so a large parent
# cannot inflate it (ru_maxrss can inherit the parent's peak on Linux); ru_maxrss is the fallback.
CHILD = """
import json, resource, sys
sys.path.insert(0, sys.argv[1])
sys.argv = ["semsearch", *sys.argv[2:]]
try:
    from cli import main
    main()
finally:
    try:
        kib = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    except (OSError, StopIteration):
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // (1024 if sys.platform == "darwin" else 1)
    print("PEAK_RSS " + json.dumps({"kib": kib}), file=sys.stderr)
"""


def run_cli(args: list[str]) -> tuple[float, float, str]:
    """Run ``semsearch ARGS`` in a child process: (wall seconds, peak RSS MiB, stdout)."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), *args], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"semsearch {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    peak = [json.loads(l[9:])["kib"] for l in proc.stderr.splitlines() if l.startswith("PEAK_RSS ")]
    return seconds, peak[-1] / 1024, proc.stdout


def write_head(source: Path, target: Path, n: int) -> int:
    """Copy the first ``n`` lines of ``source`` to ``target``; returns how many were copied."""
    written = 0
    with open(source, encoding="utf-8") as src, open(target, "w", encoding="utf-8") as dst:
        for line in src:
            if written >= n:
                break
            dst.write(line)
            written += 1
    return written


def sqlite_sizes(index_dir: Path, passages: int) -> dict:
    """Bytes per passage of the SQLite store, in total and per table (dbstat, when compiled in)."""
    total = sum(f.stat().st_size for f in index_dir.glob(f"{DB_NAME}*"))
    out = {"db_bytes": total, "passages": passages, "bytes_per_passage": round(total / passages, 1),
           "vector_blob_bytes": 4 * DIMENSION}
    conn = sqlite3.connect(f"file:{index_dir / DB_NAME}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall()
        out["per_passage_by_table"] = {name: round(size / passages, 1) for name, size in rows
                                       if size > 4096 or name in ("passages", "documents")}
    except sqlite3.OperationalError:
        pass
    finally:
        conn.close()
    return out


def build_runs(corpus: Path, sizes: list[int], types: list[str], work: Path) -> list[dict]:
    plan = [(n, "flat") for n in sizes] + [(max(sizes), t) for t in types if t != "flat"]
    rows = []
    for n, kind in plan:
        source, index_dir = work / f"corpus-{n}.jsonl", work / f"index-{n}-{kind}"
        docs = write_head(corpus, source, n)
        seconds, peak, _ = run_cli(["index", "build", str(source), "--index", str(index_dir),
                                    "--index-type", kind, "-q"])
        info = json.loads(run_cli(["index", "info", "--index", str(index_dir), "--json"])[2])
        rows.append({"documents": docs, "index_type": kind, "vector_index": info["vector_index"],
                     "passages": info["passages"], "seconds": round(seconds, 2),
                     "docs_per_s": round(docs / seconds, 2), "peak_rss_mib": round(peak, 1),
                     "index_dir": str(index_dir)})
    return rows


def synthetic(n: int, seed: int, batch: int = 10_000):
    """A ``batches`` callable: the same seeded unit vectors on every call, one batch in memory."""
    def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        rng = np.random.default_rng(seed)
        for start in range(0, n, batch):
            m = min(batch, n - start)
            v = rng.standard_normal((m, DIMENSION), dtype=np.float32)
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            yield np.arange(start + 1, start + m + 1, dtype=np.int64), v
    return batches


def vector_sizes(n: int, seed: int, work: Path) -> list[dict]:
    rows = []
    for kind in VECTOR_TYPES:
        start = time.perf_counter()
        vi = build(kind, DIMENSION, n, synthetic(n, seed))
        seconds = time.perf_counter() - start
        (work / kind).mkdir()
        size = vi.save(work / kind / "vectors-0.faiss").stat().st_size
        rows.append({"index_type": kind, "built_as": vi.describe(), "vectors": vi.ntotal,
                     "file_bytes": size, "bytes_per_vector": round(size / n, 1), "seconds": round(seconds, 2)})
        del vi
    return rows


# --- part 3: what storage costs, with a fake encoder (--storage) ---------------------------------
# Runs in a child process (its own peak RSS): builds N one-passage documents through the real
# Index.add path (commits of COMMIT_EVERY documents, SQLite rows, vector files) with the encoder
# replaced by a deterministic fake, so that storage and not the model is timed; then adds single
# documents to the finished index and times each commit.
STORAGE_CHILD = r"""
import json, os, resource, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np
folder, n, ratio, adds = sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
import index.storage.deltas
from index import Index
from index.ann.base import VectorIndex
from index.records import Passage
from index.ingest.passages import EncodedDocument
from index.storage.generations import base_generation, chain_names

DIM = 384
written = {"base": 0, "delta": 0, "bases": 0, "deltas": 0}
save_base, save_delta = VectorIndex.save, index.storage.deltas.Delta.save

def counted_base(self, path):
    out = save_base(self, path)
    written["base"] += os.path.getsize(out); written["bases"] += 1
    return out

def counted_delta(self, path, dimension, data=None):
    out = save_delta(self, path, dimension, data)
    written["delta"] += os.path.getsize(out); written["deltas"] += 1
    return out

VectorIndex.save, index.storage.deltas.Delta.save = counted_base, counted_delta
if ratio >= 0:
    VectorIndex.delta_ratio = ratio

def fake_encode(texts):
    out = {}
    for doc_id, text in texts.items():
        rng = np.random.default_rng(int(doc_id.split("-")[1]))
        v = rng.standard_normal((1, DIM)).astype(np.float32)
        out[doc_id] = EncodedDocument([Passage(0, 0, len(text), text)], v / np.linalg.norm(v))
    return out

class FakeEngine:  # the engine seam of Writer (index.ingest.engines): one passage a document, a seeded vector
    def encode_chunks(self, chunks, settings, progress=None):
        for chunk in chunks:
            yield chunk, fake_encode(chunk.texts)

def vm(key):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key + ":")) / 1024

docs = ({"id": f"doc-{i}", "text": f"synthetic document {i}"} for i in range(n))
idx = Index.create(folder)
commits, last = [], [time.perf_counter()]
def on_commit(ids):
    now = time.perf_counter(); commits.append(now - last[0]); last[0] = now
started = time.perf_counter()
with idx.writer(FakeEngine()) as w:
    w.add(docs, on_commit=on_commit)
build_s = time.perf_counter() - started
build_peak = vm("VmHWM")
gen = idx.store.generation()
chain = chain_names(base_generation(idx.store.get_info(), gen), gen)
final = sum(os.path.getsize(os.path.join(folder, f)) for f in chain)
during = dict(written)
idx.close()
opened = time.perf_counter()
idx = Index.open(folder)
with idx.writer(FakeEngine()) as w:
    open_s = time.perf_counter() - opened
    single = []
    for i in range(adds):
        t = time.perf_counter()
        w.add([{"id": f"doc-{n + i}", "text": f"synthetic document {n + i}"}])
        single.append(time.perf_counter() - t)
print("RESULT " + json.dumps({
    "passages": n, "build_s": round(build_s, 1), "commits": len(commits),
    "commit_ms_p50": round(1000 * float(np.median(commits)), 1), "commit_ms_max": round(1000 * max(commits), 1),
    "vector_bytes_written": during["base"] + during["delta"], "base_bytes_written": during["base"],
    "delta_bytes_written": during["delta"], "bases_written": during["bases"], "deltas_written": during["deltas"],
    "final_vector_bytes": final, "written_over_final": round((during["base"] + during["delta"]) / final, 2),
    "db_bytes": os.path.getsize(os.path.join(folder, "semsearch.db")),
    "build_peak_rss_mib": round(build_peak), "writer_open_s": round(open_s, 2),
    "single_add_ms_p50": round(1000 * float(np.median(single)), 1),
    "single_add_ms_max": round(1000 * max(single), 1), "single_adds": adds,
    "single_add_bytes": written["base"] + written["delta"] - during["base"] - during["delta"],
}), flush=True)
"""


def storage_runs(sizes: list[int], ratio: float, adds: int, work: Path) -> list[dict]:
    out = []
    for n in sizes:
        folder = work / f"storage-{n}"
        done = subprocess.run([sys.executable, "-c", STORAGE_CHILD, str(ROOT), str(folder), str(n), str(ratio),
                               str(adds)], capture_output=True, text=True, check=False)
        line = next((l for l in done.stdout.splitlines() if l.startswith("RESULT ")), None)
        if line is None:
            raise SystemExit(f"storage run at {n} failed:\n{done.stderr[-3000:]}")
        out.append(json.loads(line[len("RESULT "):]))
        shutil.rmtree(folder, ignore_errors=True)
    return out


def storage_main(args) -> int:
    ratio = 0.0 if args.full_rewrite else -1.0
    with tempfile.TemporaryDirectory(prefix="semsearch-bench-storage-", dir=args.workdir) as tmp:
        runs = storage_runs(args.storage, ratio, args.adds, Path(tmp))
    how = "a new base every commit (the old protocol)" if args.full_rewrite else "deltas, compacted when due"
    print(f"machine: {cpu_line()}")
    print(f"part 3: storage with a fake encoder, {how}; COMMIT_EVERY={COMMIT_EVERY}, flat, 384-d")
    print(f"{'passages':>9} {'build s':>8} {'commit ms p50/max':>18} {'vector MB written':>17} {'final MB':>9} "
          f"{'written/final':>13} {'bases':>6} {'peak RSS MiB':>13} {'open s':>7} {'1-doc add ms p50/max':>21}")
    for r in runs:
        print(f"{r['passages']:>9} {r['build_s']:>8.1f} {r['commit_ms_p50']:>8.1f} / {r['commit_ms_max']:<7.1f} "
              f"{r['vector_bytes_written'] / 1e6:>17.1f} {r['final_vector_bytes'] / 1e6:>9.1f} "
              f"{r['written_over_final']:>13.2f} {r['bases_written']:>6} {r['build_peak_rss_mib']:>13} "
              f"{r['writer_open_s']:>7.2f} {r['single_add_ms_p50']:>9.1f} / {r['single_add_ms_max']:<9.1f}")
    print(json.dumps({"benchmark": "build-storage", **cpu_info(), "full_rewrite": args.full_rewrite,
                      "commit_every": COMMIT_EVERY, "runs": runs}))
    return 0

# --- part 4: space after deletes (--delete-cycle N) ------------------------------------------------
# In this process, with a fake encoder (one ~550-character passage a document, a seeded 384-d
# vector): build N, delete 90 % (seeded random ids, one call), delete the rest, add N/10 new ones;
# after each step the folder's bytes (database, WAL, vector files) against a fresh build of the
# documents then stored, automatically and after `index compact`.
WORDS = ("index vector search passage model layer query store write delete space page file "
         "commit reader writer backup metric latency shard token answer question sentence").split()


def cycle_text(i: int) -> str:
    rng = np.random.default_rng(i)
    words, n = [], 0
    while n < 550:
        w = WORDS[int(rng.integers(len(WORDS)))]
        words.append(w)
        n += len(w) + 1
    return " ".join(words)[:550]


def folder_parts(folder: Path) -> dict:
    files = [p for p in folder.rglob("*") if p.is_file()]
    db = sum(p.stat().st_size for p in files if p.name == DB_NAME)
    wal = sum(p.stat().st_size for p in files if p.name == DB_NAME + "-wal")
    vectors = sum(p.stat().st_size for p in files if p.name.startswith("vectors-"))
    return {"bytes": sum(p.stat().st_size for p in files), "db": db, "wal": wal, "vectors": vectors}


def delete_cycle(n: int, work: Path, compact: bool, fresh_sizes: dict | None = None) -> list[dict]:
    """The cycle's steps with the folder's bytes after each (after ``index compact`` with ``compact``),
    and, when ``fresh_sizes`` is a dict to fill, a fresh build of each step's documents."""
    from index import Index
    from index.ingest.passages import EncodedDocument
    from index.records import Passage

    class FakeEngine:  # the writer's engine seam: one passage a document, a seeded unit vector
        def encode_chunks(self, chunks, settings, progress=None):
            for chunk in chunks:
                out = {}
                for doc_id, (text, _meta, _digest) in chunk.to_encode.items():
                    v = np.random.default_rng(int(doc_id.split("-")[1])).standard_normal((1, DIMENSION))
                    out[doc_id] = EncodedDocument([Passage(0, 0, len(text), text)],
                                                  (v / np.linalg.norm(v)).astype(np.float32))
                yield chunk, out

    def add(index, ids):
        with index.writer(FakeEngine()) as w:
            w.add({"id": f"doc-{i}", "text": cycle_text(i)} for i in ids)

    def step(name, index, ids) -> dict:
        if compact:
            index.compact()
        row = {"step": name, "documents": len(ids), **folder_parts(index.path)}
        if fresh_sizes is not None and ids:
            folder = work / f"fresh-{len(fresh_sizes)}"
            built = Index.create(folder)
            add(built, ids)
            built.close()
            fresh_sizes[name] = folder_parts(folder)
            shutil.rmtree(folder, ignore_errors=True)
        return row

    rows = []
    index = Index.create(work / ("cycle-compacted" if compact else "cycle"))
    everything = list(range(n))
    add(index, everything)
    rows.append(step(f"build {n}", index, everything))
    gone = sorted(np.random.default_rng(0).choice(n, size=n * 9 // 10, replace=False).tolist())
    index.delete(f"doc-{i}" for i in gone)
    left = sorted(set(everything) - set(gone))
    rows.append(step("delete 90 %", index, left))
    index.delete(f"doc-{i}" for i in left)
    rows.append(step("delete the rest", index, []))
    new = list(range(n, n + n // 10))
    add(index, new)
    rows.append(step(f"add {n // 10} new", index, new))
    index.close()
    shutil.rmtree(index.path, ignore_errors=True)
    return rows


def delete_cycle_main(args) -> int:
    n = 2_000 if args.quick else args.delete_cycle
    fresh: dict = {}
    with tempfile.TemporaryDirectory(prefix="semsearch-bench-space-", dir=args.workdir) as tmp:
        auto = delete_cycle(n, Path(tmp), compact=False, fresh_sizes=fresh)
        compacted = delete_cycle(n, Path(tmp), compact=True)
    mib = 2 ** 20
    print(f"machine: {cpu_line()}")
    print("part 4: space after deletes, fake encoder (one ~550-character passage a document, 384-d), flat index")
    print(f"{'step':<16} {'docs':>7} {'fresh MiB':>10} {'automatic MiB (db/wal/vectors)':>34} {'x fresh':>8} "
          f"{'after compact MiB':>18} {'x fresh':>8}")
    for a, c in zip(auto, compacted):
        f = fresh.get(a["step"])
        a["fresh"], c["fresh"] = f, f
        ratio = (lambda r: f"{r['bytes'] / f['bytes']:.2f}" if f else "-")
        detail = f"{a['bytes'] / mib:.1f} ({a['db'] / mib:.1f}/{a['wal'] / mib:.1f}/{a['vectors'] / mib:.1f})"
        print(f"{a['step']:<16} {a['documents']:>7} {(f['bytes'] / mib if f else 0):>10.1f} {detail:>34} "
              f"{ratio(a):>8} {c['bytes'] / mib:>18.1f} {ratio(c):>8}")
    print(json.dumps({"benchmark": "build-delete-cycle", **cpu_info(), "documents": n, "automatic": auto,
                      "compacted": compacted}))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=None, help="documents (default 1000 2000; --quick 150 300)")
    parser.add_argument("--types", nargs="+", default=["flat"], choices=VECTOR_TYPES + ("auto",),
                        help="index types for part 1; others than flat run at the larger size")
    parser.add_argument("--vectors", type=int, default=None, help="synthetic vectors (default 100000; --quick 20000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--quick", action="store_true", help="150 and 300 documents, 20,000 vectors")
    parser.add_argument("--storage", type=int, nargs="+", default=None, metavar="N",
                        help="run part 3 only: build N one-passage documents with a fake encoder (e.g. 100000 1000000)")
    parser.add_argument("--full-rewrite", action="store_true",
                        help="part 3 with a new base file at every commit (the protocol before deltas), to compare")
    parser.add_argument("--adds", type=int, default=20, help="part 3: single-document adds to time")
    parser.add_argument("--workdir", default=None, help="part 3: where to build (default: the temporary folder)")
    parser.add_argument("--delete-cycle", type=int, nargs="?", const=100_000, default=None, metavar="N",
                        help="run part 4 only: space after building N (default 100000; --quick 2000), deleting "
                             "90 %%, deleting the rest and adding N/10")
    args = parser.parse_args()
    if args.delete_cycle:
        return delete_cycle_main(args)
    if args.storage:
        return storage_main(args)
    corpus = args.data / SCIFACT
    if not corpus.is_file():
        print(f"skipped: SciFact corpus not found at {corpus}", file=sys.stderr)
        return 0
    sizes = sorted(args.sizes or ([150, 300] if args.quick else [1000, 2000]))
    n_vectors = args.vectors or (20_000 if args.quick else 100_000)
    if n_vectors < backend("ivfpq").min_training:
        print(f"note: {n_vectors} vectors < {backend('ivfpq').min_training}: ivfpq stays flat", file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="semsearch-bench-build-") as tmp:
        work = Path(tmp)
        builds = build_runs(corpus, sizes, args.types, work)
        flat = [r for r in builds if r["index_type"] == "flat"]
        small, large = flat[0], flat[-1]
        sqlite = sqlite_sizes(Path(large["index_dir"]), large["passages"])
        vectors = vector_sizes(n_vectors, args.seed, work)
    for r in builds:
        del r["index_dir"]
    ratio = round(large["peak_rss_mib"] / small["peak_rss_mib"], 3)
    marginal = round((large["documents"] - small["documents"]) / max(1e-9, large["seconds"] - small["seconds"]), 2)
    chunks = [-(-r["documents"] // COMMIT_EVERY) for r in (small, large)]

    from index.model.encoder import Encoder

    default = Encoder.load()  # what `index build` runs here by default (auto: measured once, cached)
    print(f"machine: {cpu_line()}; default encoder: {runs_line(default)}")
    print(f"part 1: semsearch index build in a child process (COMMIT_EVERY={COMMIT_EVERY})")
    print(f"{'docs':>6} {'passages':>9} {'type':>6} {'seconds':>8} {'docs/s':>7} {'peak RSS MiB':>13}")
    for r in builds:
        print(f"{r['documents']:>6} {r['passages']:>9} {r['index_type']:>6} {r['seconds']:>8.1f} "
              f"{r['docs_per_s']:>7.1f} {r['peak_rss_mib']:>13.1f}")
    print(f"peak RSS {large['documents']} / {small['documents']} docs: {ratio:.3f}x "
          f"({chunks[0]} vs {chunks[1]} commit chunk(s)); marginal rate without start-up: {marginal:.1f} docs/s")
    print(f"SQLite: {sqlite['bytes_per_passage']:.0f} B per passage ({sqlite['db_bytes']} B / "
          f"{sqlite['passages']} passages; the vector blob is {sqlite['vector_blob_bytes']} B)"
          + "".join(f"\n  {k}: {v:.0f} B/passage" for k, v in sqlite.get("per_passage_by_table", {}).items()))
    print(f"\npart 2: FAISS file per stored vector, {n_vectors} synthetic {DIMENSION}-d unit vectors")
    print(f"{'type':>6} {'built as':<24} {'B/vector':>9} {'file MiB':>9} {'build s':>8}")
    for r in vectors:
        print(f"{r['index_type']:>6} {r['built_as']:<24} {r['bytes_per_vector']:>9.1f} "
              f"{r['file_bytes'] / 2**20:>9.1f} {r['seconds']:>8.1f}")
    print(json.dumps({"benchmark": "build", **cpu_info(), **encoder_runs(default), "backend": default.backend,
                      "precision": default.precision, "quick": args.quick, "commit_every": COMMIT_EVERY,
                      "builds": builds, "peak_rss_ratio": ratio, "marginal_docs_per_s": marginal,
                      "sqlite": sqlite, "synthetic_vectors": n_vectors, "vector_types": vectors}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
