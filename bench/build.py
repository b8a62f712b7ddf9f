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
``index.vectors.build``, saves it, and reports file bytes / N and build seconds.
ivfpq needs at least 9,984 vectors to train; below that it stays flat. It also
reports the SQLite bytes per passage that semsearch stores in addition
(``semsearch.db`` / passages of the larger part-1 index; each row holds a
1,536-byte float32 vector blob, the passage text and offsets).
Prints tables and one JSON line.

    python bench/build.py --quick
    python bench/build.py --sizes 1000 2000 --types flat hnsw --vectors 100000
"""

from __future__ import annotations

import argparse
import json
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

from hostinfo import cpu_info, cpu_line  # noqa: E402  (bench/ is on sys.path as the script's folder)
from index.options import COMMIT_EVERY, VECTOR_BACKENDS  # noqa: E402
from index.store import DB_NAME  # noqa: E402
from index.vectors import backend, build  # noqa: E402

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=None, help="documents (default 1000 2000; --quick 150 300)")
    parser.add_argument("--types", nargs="+", default=["flat"], choices=VECTOR_TYPES + ("auto",),
                        help="index types for part 1; others than flat run at the larger size")
    parser.add_argument("--vectors", type=int, default=None, help="synthetic vectors (default 100000; --quick 20000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--quick", action="store_true", help="150 and 300 documents, 20,000 vectors")
    args = parser.parse_args()
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

    from index.encoder import Encoder

    default = Encoder.load()  # what `index build` runs here by default (auto: measured once, cached)
    print(f"machine: {cpu_line()}; default encoder: {default.backend} {default.precision}")
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
    print(json.dumps({"benchmark": "build", **cpu_info(), "backend": default.backend,
                      "precision": default.precision, "quick": args.quick, "commit_every": COMMIT_EVERY,
                      "builds": builds, "peak_rss_ratio": ratio, "marginal_docs_per_s": marginal,
                      "sqlite": sqlite, "synthetic_vectors": n_vectors, "vector_types": vectors}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
