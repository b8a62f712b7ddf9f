"""Filtered search cost: p50 of a query with a metadata filter, beside the same query unfiltered.

Builds N one-passage documents through the real ``Index.add`` path (commits,
SQLite rows, the m002 filter tables and triggers, vector files) with the
encoder replaced by a deterministic fake, as ``bench/build.py --storage``
does; each document has ``lang`` (``en`` for half), ``cat`` (``c0``..``c99``,
1 % each), ``year`` (2000..2024) and a code ``E0000``..``E9999`` in its text.
Then it runs the real search path with given query vectors (no model:
``Searcher.search_vectors``, which evaluates the filter, plans and searches)
for each filter row, ``--queries`` distinct queries a row (default 50), and
reports the p50: with the allowed ids cached for the generation (every query
after the first), and uncached (the cache cleared before each query). With
``--legacy-scan`` each equality row is also run the way it ran before m002
(``filters.legacy_passage_ids``: ``json_each`` over every document; always the
ANN search) in the same run. It also reports the build's bytes written
(``/proc/self/io``), the database size, and the p50 of a one-document add to
the finished index.

Prints a table and one JSON line (the CPU included).

    python bench/filters.py --sizes 1000000 --types flat ivf --legacy-scan
    python bench/filters.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hostinfo import cpu_info, cpu_line  # noqa: E402  (bench/ is on sys.path as the script's folder)

from index import Index  # noqa: E402
from index.ingest.passages import EncodedDocument  # noqa: E402
from index.records import Passage  # noqa: E402
from index.storage import filters, snapshot  # noqa: E402
from search import Searcher, planner  # noqa: E402

DIM = 384
ROWS = [  # (label, filter, share of documents it selects, a plain key=value filter the old scan can run)
    ("no filter", None, 1.0, True),
    ("lang=en (50 %)", {"lang": "en"}, 0.5, True),
    ("cat=c7 (1 %)", {"cat": "c7"}, 0.01, True),
    ("cat=c7, year=1999 (none)", {"cat": "c7", "year": 1999}, 0.0, True),
    ("nobody=x (no such key)", {"nobody": "x"}, 0.0, True),
    ("year>=2020 (20 %)", {"year": {"$gte": 2020}}, 0.2, False),
    ("cat in c1..c5 (5 %)", {"cat": {"$in": ["c1", "c2", "c3", "c4", "c5"]}}, 0.05, False),
    ("lang!=en, year<2002 (4 %)", {"lang": {"$ne": "en"}, "year": {"$lt": 2002}}, 0.04, False),
    ("text~E0042 (0.01 %)", {"$contains": "E0042"}, 0.0001, False),
]


def vector(i: int) -> np.ndarray:
    v = np.random.default_rng(i).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def document(i: int) -> dict:
    return {"id": f"doc-{i}", "text": f"synthetic document {i} code E{i % 10000:04d}",
            "metadata": {"lang": "en" if i % 2 == 0 else ("ko" if i % 4 == 1 else "de"),
                         "cat": f"c{(i // 2) % 100}", "year": 2000 + i % 25}}


class FakeEngine:  # the engine seam of Writer (index.ingest.engines): one passage a document, a seeded vector
    def encode_chunks(self, chunks, settings, progress=None):
        for chunk in chunks:
            out = {}
            for doc_id, text in chunk.texts.items():
                i = int(doc_id.split("-")[1])
                out[doc_id] = EncodedDocument([Passage(0, 0, len(text), text)], vector(i)[None, :])
            yield chunk, out


def io_written() -> int:
    try:
        with open("/proc/self/io", encoding="ascii") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("write_bytes:"))
    except (OSError, StopIteration):
        return -1


def build(folder: Path, n: int, index_type: str) -> dict:
    before, started = io_written(), time.perf_counter()
    idx = Index.create(folder, index_type=index_type)
    with idx.writer(FakeEngine()) as w:
        w.add(document(i) for i in range(n))
    seconds = time.perf_counter() - started
    written = io_written() - before if before >= 0 else -1
    db = folder / "semsearch.db"
    sizes = {}
    try:
        sizes = {name: int(size) for name, size in idx.store.conn.execute(
            "SELECT name, sum(pgsize) FROM dbstat GROUP BY name")}
    except Exception:  # dbstat is optional in SQLite builds
        pass
    filter_bytes = sum(v for k, v in sizes.items() if "metadata_values" in k or k.startswith("documents_text"))
    idx.close()
    return {"build_s": round(seconds, 1), "bytes_written": written, "db_bytes": db.stat().st_size,
            "filter_table_bytes": filter_bytes or None}


def p50_ms(fn, queries: np.ndarray, before=None) -> float:
    times = []
    for q in queries:
        if before is not None:
            before()
        t = time.perf_counter()
        fn(q)
        times.append(1000 * (time.perf_counter() - t))
    return statistics.median(times)


def legacy_mode(on: bool, saved={}):
    """Search as before m002: the json_each scan of every document, always the ANN index."""
    if on:
        saved.update(allowed=snapshot.Snapshot.allowed_ids, exact=planner.EXACT_MAX, fallback=planner.EXACT_FALLBACK_MAX)
        snapshot.Snapshot.allowed_ids = lambda self, where: (
            filters.legacy_passage_ids(self.store.conn, dict(where)) if where else None)
        planner.EXACT_MAX = planner.EXACT_FALLBACK_MAX = -1
    else:
        snapshot.Snapshot.allowed_ids = saved["allowed"]
        planner.EXACT_MAX, planner.EXACT_FALLBACK_MAX = saved["exact"], saved["fallback"]


def measure(folder: Path, n: int, index_type: str, queries: int, legacy: bool, adds: int,
            legacy_queries: int | None = None) -> dict:
    searcher = Searcher(folder)
    rng = np.random.default_rng(12345)
    qs = rng.standard_normal((queries, DIM)).astype(np.float32)
    qs /= np.linalg.norm(qs, axis=1, keepdims=True)
    searcher.search_vectors(qs[:1], k=10)  # load the vectors once
    rows = []
    for label, where, share, plain in ROWS:
        def run(q, where=where):
            return searcher.search_vectors(q[None, :], k=10, where=where)

        hits = len(run(qs[0])[0])
        row = {"filter": label, "where": where, "share": share, "hits": hits,
               "p50_ms": round(p50_ms(run, qs), 2),
               "p50_uncached_ms": round(p50_ms(run, qs, before=filters.clear_cache), 2)}
        if legacy and plain:
            legacy_mode(True)
            try:
                row["legacy_p50_ms"] = round(p50_ms(run, qs[:legacy_queries or queries]), 2)
            finally:
                legacy_mode(False)
        rows.append(row)
    base = rows[0]["p50_ms"]
    for row in rows:
        row["over_unfiltered"] = round(row["p50_ms"] / base, 2) if base else None
    idx = Index.open(folder)
    single = []
    with idx.writer(FakeEngine()) as w:
        for i in range(adds):
            t = time.perf_counter()
            w.add([document(n + i)])
            single.append(1000 * (time.perf_counter() - t))
    idx.close()
    return {"rows": rows, "single_add_ms_p50": round(statistics.median(single), 1) if single else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000], help="documents (e.g. 1000000)")
    parser.add_argument("--types", nargs="+", default=["flat", "ivf"], help="index types to build")
    parser.add_argument("--queries", type=int, default=50, help="queries per row (p50 over them)")
    parser.add_argument("--adds", type=int, default=10, help="one-document adds timed on the finished index")
    parser.add_argument("--legacy-scan", action="store_true", help="also run the equality rows the old way")
    parser.add_argument("--legacy-queries", type=int, default=None,
                        help="queries per legacy row (default: --queries; the scan takes seconds at 1M)")
    parser.add_argument("--workdir", default=None, help="where the indexes are built (default: a temp folder)")
    parser.add_argument("--quick", action="store_true", help="5,000 documents, flat and ivf, with --legacy-scan")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.legacy_scan, args.adds = [5_000], True, 3
    print(f"machine: {cpu_line()}", flush=True)
    runs = []
    with tempfile.TemporaryDirectory(prefix="semsearch-bench-filters-", dir=args.workdir) as tmp:
        for n in args.sizes:
            for kind in args.types:
                folder = Path(tmp) / f"{kind}-{n}"
                built = build(folder, n, kind)
                print(f"\n{n:,} documents, {kind}: built in {built['build_s']} s, "
                      f"{built['bytes_written'] / 1e6:,.0f} MB written, database {built['db_bytes'] / 1e6:,.0f} MB"
                      + (f" (filter tables {built['filter_table_bytes'] / 1e6:,.0f} MB)"
                         if built["filter_table_bytes"] else ""), flush=True)
                result = measure(folder, n, kind, args.queries, args.legacy_scan, args.adds, args.legacy_queries)
                print(f"{'filter':<28} {'hits':>4} {'p50 ms':>8} {'uncached':>9} {'x unfiltered':>12} "
                      f"{'legacy scan':>11}")
                for r in result["rows"]:
                    old = f"{r['legacy_p50_ms']:.2f}" if "legacy_p50_ms" in r else "-"
                    print(f"{r['filter']:<28} {r['hits']:>4} {r['p50_ms']:>8.2f} {r['p50_uncached_ms']:>9.2f} "
                          f"{r['over_unfiltered']:>12.2f} {old:>11}")
                print(f"one-document add: p50 {result['single_add_ms_p50']} ms", flush=True)
                runs.append({"documents": n, "type": kind, "queries": args.queries, **built, **result})
                shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps({"benchmark": "filters", **cpu_info(), "load": os.getloadavg(),
                      "legacy_queries": args.legacy_queries or args.queries, "runs": runs}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
