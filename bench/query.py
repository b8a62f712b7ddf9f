"""Query benchmark: end-to-end latency of one query (embed + vector search + metadata fetch).

For each index size (default 10k, 100k and 1M passages) and each index type,
an index is filled with the real StackFAQ documents (encoded by semsearch)
plus synthetic 384-d unit vectors, and the real StackFAQ questions are run one
at a time through ``Searcher.search(q, k=10)``. Reports p50/p99 latency, the
embed and search parts, and recall@10 of the documents returned against exact
search over the same vectors. Prints a table and one JSON line.

    python bench/query.py --quick          # 10k and 100k, fewer queries
    python bench/query.py                  # 10k, 100k, 1M (1M takes a while: SQLite holds 1.5 GB)
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hostinfo import cpu_info, cpu_line, encoder_runs, runs_line  # noqa: E402  (bench/ is on sys.path as the script's folder)

from index import Index  # noqa: E402
from index.ingest.sources import read_documents  # noqa: E402
from index.options import BACKENDS, PRECISIONS  # noqa: E402
from search import Searcher  # noqa: E402
from search.evaluation import load_queries  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "stackfaq"


def fill_synthetic(index: Index, total: int, seed: int = 0, near: np.ndarray | None = None) -> None:
    """Add synthetic unit-vector passages (one per document) until ``total`` passages are stored.

    With ``near`` (real document vectors), each synthetic vector is one of them plus noise
    (cosine about 0.8 to it), so the fillers compete with the real documents as neighbours.
    """
    store = index.store
    dim = int(index.config["dimension"])
    have = store.counts()[1]
    rng = np.random.default_rng(seed)
    next_id = int(store.get_info()["next_passage_id"])
    batch = 20_000
    while have < total:
        n = min(batch, total - have)
        vecs = rng.standard_normal((n, dim)).astype(np.float32)
        if near is not None:
            vecs = near[rng.integers(0, len(near), n)] + 0.038 * vecs  # |noise|² ≈ 384·0.038² ≈ 0.56
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        with store.transaction():
            store.insert_vector_documents(next_id, vecs)
            store.bump_generation()
        next_id += n
        have += n


def exact_top_docs(index: Index, qvecs: np.ndarray, k: int = 10) -> list[list[str]]:
    """Exact top-k documents by best passage, by brute force over the stored vectors."""
    dim = int(index.config["dimension"])
    scores_parts, id_parts = [], []
    for ids, vecs in index.store.iter_vectors(dim, batch=100_000):
        scores_parts.append(qvecs @ vecs.T)
        id_parts.append(ids)
    scores, ids = np.concatenate(scores_parts, axis=1), np.concatenate(id_parts)
    out = []
    for row in scores:
        top = ids[np.argsort(-row)[: 5 * k]]
        rows = index.store.passages(top.tolist())
        docs: list[str] = []
        for pid in top:
            d = rows[int(pid)][0]
            if d not in docs:
                docs.append(d)
        out.append(docs[:k])
    return out


def measure(path: Path, kind: str, queries: list[str], exact: list[list[str]],
            ef_search: int | None = None, nprobe: int | None = None, tuned: bool = True,
            rebuild: bool = True) -> dict:
    """Re-index as ``kind`` (which tunes its search settings), then time the queries: with the tuned
    settings, or (``tuned=False``) with the type's fixed defaults, as before tuning existed.
    ``rebuild=False`` times the index as it is (its recorded tuning kept unless ``tuned=False``)."""
    started = time.perf_counter()
    index = Index.open(path)
    if rebuild:
        index.rebuild(index_type=kind)  # re-indexes the stored vectors (no encoding) and tunes them
    build_s = time.perf_counter() - started
    tuning = index.config.get("search_tuning")
    if not tuned:
        with index.writer() as writer:
            writer.record({"search_tuning": None})
    index.close()
    searcher = Searcher(path, ef_search=ef_search, nprobe=nprobe)
    searcher.search(queries[0], k=10)  # loads the model and the FAISS file
    encoder = searcher.encoder
    total, embed, search, found = [], [], [], []
    for q in queries:
        t0 = time.perf_counter()
        hits = searcher.search(q, k=10)
        total.append(time.perf_counter() - t0)
        t1 = time.perf_counter()
        vector = encoder.encode([q])
        embed.append(time.perf_counter() - t1)
        t2 = time.perf_counter()
        searcher.search_vectors(vector, k=10)
        search.append(time.perf_counter() - t2)
        found.append([h.id for h in hits])
    recall = statistics.mean(len(set(f) & set(e)) / max(1, len(e)) for f, e in zip(found, exact))
    ms = lambda xs, p: 1000 * float(np.percentile(xs, p))  # noqa: E731
    return {"type": kind, "vector_index": searcher.index.info().vector_index, "build_s": round(build_s, 1),
            "p50_ms": round(ms(total, 50), 2), "p99_ms": round(ms(total, 99), 2),
            "embed_p50_ms": round(ms(embed, 50), 2),
            "search_fetch_p50_ms": round(ms(search, 50), 2),
            "recall_at_10": round(recall, 4), "queries": len(queries),
            "settings": (tuning or {}).get("settings") if tuned else "defaults",
            "tuning_s": (tuning or {}).get("seconds")}


def import_profile(path: Path) -> dict:
    """``python -X importtime`` of a whole `semsearch query` process: the import seconds in all, the
    slowest top-level imports, and whether torch or transformers were imported at all."""
    import subprocess

    code = "from cli import main; main()"
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", code, "query", "reset my password",
                          "--index", str(path), "-k", "3"], cwd=ROOT, check=True, capture_output=True, text=True)
    rows = []
    for line in out.stderr.splitlines():
        if line.startswith("import time:") and "|" in line and "cumulative" not in line:
            _, cumulative, name = line[len("import time:"):].split("|")
            rows.append((int(cumulative), name.rstrip()))
    top = [(c, n.strip()) for c, n in rows if not n.startswith("  ")]  # imported by the program itself
    names = {n.strip() for _, n in rows}
    return {"import_s": round(sum(c for c, _ in top) / 1e6, 3),
            "slowest_imports": [{"module": n, "s": round(c / 1e6, 3)} for c, n in sorted(top, reverse=True)[:6]],
            "imports_torch": "torch" in names, "imports_transformers": "transformers" in names}


def startup_seconds(path: Path, runs: int = 3) -> dict:
    """Wall time of a whole `semsearch query` process (imports, model load, one search), median of runs,
    and of `semsearch --help` (imports only)."""
    import subprocess

    def timed(args: list[str]) -> float:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "from cli import main; main()", *args], cwd=ROOT,
                       check=True, capture_output=True)
        return time.perf_counter() - t0

    query = statistics.median(timed(["query", "reset my password", "--index", str(path), "-k", "3"])
                              for _ in range(runs))
    bare = statistics.median(timed(["--help"]) for _ in range(runs))
    return {"query_process_s": round(query, 2), "help_process_s": round(bare, 2), **import_profile(path)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=None)
    parser.add_argument("--types", nargs="+", default=["flat", "hnsw", "ivf", "ivfpq"])
    parser.add_argument("--queries", type=int, default=300, help="queries per measurement")
    parser.add_argument("--skip-hnsw-above", type=int, default=200_000,
                        help="HNSW takes long to build on 2 cores; skip it above this size")
    parser.add_argument("--quick", action="store_true", help="10k and 100k passages, 100 queries")
    parser.add_argument("--ef-search", type=int, default=None, help="override HNSW efSearch")
    parser.add_argument("--nprobe", type=int, default=None, help="override IVF nprobe")
    parser.add_argument("--untuned", action="store_true",
                        help="search with each type's fixed default settings instead of the ones tuned at build "
                             "(the figures before tuning existed)")
    parser.add_argument("--both", action="store_true",
                        help="time each approximate type twice on one build: tuned, then with the fixed defaults")
    parser.add_argument("--filler", choices=["random", "near"], default="random",
                        help="synthetic vectors: random unit vectors, or noisy copies of the real documents' "
                             "vectors (hard neighbours: a stricter recall test)")
    parser.add_argument("--workdir", default=None, help="where to build the indexes (default: a temp folder)")
    parser.add_argument("--backend", choices=BACKENDS, default=None, help="inference backend (default: auto)")
    parser.add_argument("--precision", choices=PRECISIONS, default=None, help="precision (default: auto)")
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"skipped: StackFAQ data not found at {DATA}", file=sys.stderr)
        return 0
    sizes = args.sizes or ([10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000])
    n_queries = 100 if args.quick else args.queries
    warnings.simplefilter("ignore")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="semsearch-bench-"))
    path = work / "index"
    shutil.rmtree(path, ignore_errors=True)
    index, _ = Index.build(path, read_documents([DATA / "corpus.jsonl"]), backend=args.backend,
                           precision=args.precision)
    queries = [q.text for q in load_queries(DATA / "queries.jsonl") if q.text.strip()][:n_queries]
    qvecs = index.encoder.encode(queries)
    real = np.concatenate([v for _, v in index.store.iter_vectors(int(index.config["dimension"]))])
    near = real if args.filler == "near" else None
    rows = []
    startup = None
    for size in sorted(sizes):
        fill_synthetic(index, size, near=near)
        if startup is None:
            startup = {"passages": size, **startup_seconds(path)}
        exact = exact_top_docs(index, qvecs)
        for kind in args.types:
            if kind == "hnsw" and size > args.skip_hnsw_above:
                rows.append({"size": size, "type": kind, "skipped": f"build time above {args.skip_hnsw_above:,}"})
                continue
            if kind == "flat" and size >= 1_000_000:
                use = queries[: max(20, n_queries // 10)]
                rows.append({"size": size, **measure(path, kind, use, exact[: len(use)])})
            else:
                rows.append({"size": size, **measure(path, kind, queries, exact, args.ef_search, args.nprobe,
                                                     tuned=not args.untuned)})
                if args.both and kind != "flat" and not args.untuned:
                    print(json.dumps(rows[-1]), file=sys.stderr)
                    rows.append({"size": size, **measure(path, kind, queries, exact, args.ef_search, args.nprobe,
                                                         tuned=False, rebuild=False)})
            print(json.dumps(rows[-1]), file=sys.stderr)
    info = {**cpu_info(), "python": platform.python_version(), "precision": index.encoder.precision,
            "backend": index.encoder.backend, **encoder_runs(index.encoder), "filler": args.filler, "startup": startup}
    print(f"\nmachine: {cpu_line(info)}; {runs_line(index.encoder)}, filler vectors: {args.filler}")
    print(f"{'passages':>9} {'type':>6} {'p50 ms':>7} {'p99 ms':>7} {'embed':>6} {'search':>7} {'recall@10':>9} "
          f"{'build s':>8}  settings")
    for r in rows:
        if "skipped" in r:
            print(f"{r['size']:>9} {r['type']:>6}   skipped ({r['skipped']})")
            continue
        print(f"{r['size']:>9} {r['type']:>6} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} {r['embed_p50_ms']:>6.2f} "
              f"{r['search_fetch_p50_ms']:>7.2f} {r['recall_at_10']:>9.4f} {r['build_s']:>8.1f}  {r['settings']}")
    print(f"semsearch query as a new process (imports, model load, one search) at {startup['passages']:,} "
          f"passages: {startup['query_process_s']} s; semsearch --help: {startup['help_process_s']} s")
    print(f"its imports: {startup['import_s']} s (torch imported: {startup['imports_torch']}, transformers: "
          f"{startup['imports_transformers']}); slowest: "
          + ", ".join(f"{m['module']} {m['s']:.3f} s" for m in startup["slowest_imports"]))
    print(json.dumps({"benchmark": "query", **info, "results": rows}))
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
