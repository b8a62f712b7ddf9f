"""Recall on real, clustered data: every sentence of the SciFact abstracts, the SciFact claims as queries.

An index of every sentence of the 5,183 SciFact abstracts (each sentence a
document of its own, about 44,000) is built once with the embedded model
(``--workdir`` keeps it between runs). Then for each approximate type it is
re-indexed from the stored vectors (no encoding; the build tunes the search
settings to ``--target-recall``) and the 1,109 claims are searched one at a
time (``Searcher.search_vectors``: vector search, passage rows, documents):
recall@10 of the documents returned against exact (flat) search, and p50
latency. Each type is measured with the settings tuned at build and with its
fixed defaults (the behaviour before tuning). Prints the CPU, a table and one
JSON line.

    python bench/recall.py                  # builds the sentence index on first use (minutes)
    python bench/recall.py --workdir /tmp/scifact-sentences --types ivf
    python bench/recall.py --workdir /tmp/scifact-sentences --proxies

``--proxies`` checks what the tuning measures on: for a plain IVF (the
index's list count) and HNSW over the same sentence vectors, recall@10 at
each nprobe and efSearch for the claims, for the tuning's proxy queries
(``tuning.proxy_queries``), for the sampled passages themselves (their own
row left out) and for midpoints of two random passages.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hostinfo import cpu_info, cpu_line, encoder_runs, runs_line  # noqa: E402  (bench/ is on sys.path as the script's folder)

from index import Index  # noqa: E402
from search import Searcher  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "scifact"
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\[])")


def sentences(corpus: Path, abstracts: int | None = None):
    """Every sentence of the first ``abstracts`` abstracts (None: all), each a document."""
    for n, line in enumerate(corpus.open(encoding="utf-8")):
        if abstracts is not None and n >= abstracts:
            return
        doc = json.loads(line)
        for i, sentence in enumerate(s for s in SENTENCE_END.split(doc["text"]) if s.strip()):
            yield {"id": f"{doc['_id']}.{i}", "text": sentence.strip(), "metadata": {"abstract": doc["_id"]}}


def claims(path: Path) -> list[str]:
    return [json.loads(line)["text"] for line in path.open(encoding="utf-8")]


def search_all(path: Path, qvecs: np.ndarray) -> tuple[list[list[str]], list[float]]:
    searcher = Searcher(path)
    searcher.search_vectors(qvecs[:1], k=10)  # loads the FAISS files
    found, seconds = [], []
    for row in qvecs:
        started = time.perf_counter()
        hits = searcher.search_vectors(row[None, :], k=10)[0]
        seconds.append(time.perf_counter() - started)
        found.append([h.id for h in hits])
    searcher.index.close()
    return found, seconds


def proxy_curves(base: Path, qvecs: np.ndarray, samples: int = 300) -> list[dict]:
    """Recall@10 per nprobe / efSearch for the claims and for the candidate tuning queries."""
    import faiss

    from index.ann.ivf import n_lists
    from index.ann.tuning import proxy_queries

    with Index.open(base) as index:
        dim = int(index.config["dimension"])
        X = np.ascontiguousarray(np.concatenate([v for _, v in index.store.iter_vectors(dim)]))
    rng = np.random.default_rng(0)
    rows = rng.choice(len(X), samples, replace=False)
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    kinds = {"claims": (qvecs, None), "proxy (tuning)": (proxy_queries(X[rows]), None),
             "passages": (X[rows], rows), "midpoints": (unit(X[rows] + X[rng.choice(len(X), samples)]), None)}
    nlist = n_lists(len(X))
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.train(X[rng.choice(len(X), min(len(X), 64 * nlist), replace=False)])
    ivf.add(X)
    hnsw = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
    hnsw.add(X)
    out = []
    for name, (q, own) in kinds.items():
        q = np.ascontiguousarray(q, dtype=np.float32)

        def recall(found):
            hits = 0
            for r, row in enumerate(found):
                keep = lambda ids: [i for i in ids if own is None or i != own[r]][:10]  # noqa: E731
                hits += len(set(keep(truth[r])) & set(keep(row)))
            return round(hits / (10 * len(q)), 3)

        _, truth = faiss.knn(q, X, 11, metric=faiss.METRIC_INNER_PRODUCT)
        curve = {"queries": name, "lists": nlist}
        for nprobe in (8, 16, 32, 48, 64, 96, 128):
            ivf.nprobe = nprobe
            curve[f"nprobe {nprobe}"] = recall(ivf.search(q, 11)[1])
        for ef in (16, 32, 64, 128):
            hnsw.hnsw.efSearch = ef
            curve[f"efSearch {ef}"] = recall(hnsw.search(q, 11)[1])
        out.append(curve)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--types", nargs="+", default=["hnsw", "ivf", "ivfpq"])
    parser.add_argument("--target-recall", type=float, default=0.95)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the sentence index here between runs")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--proxies", action="store_true",
                        help="compare the recall curves of the claims and of candidate tuning queries instead")
    parser.add_argument("--quick", action="store_true",
                        help="the sentences of the first 300 abstracts and the first 100 claims (a smoke run)")
    args = parser.parse_args()
    if not (args.data / "corpus.jsonl").is_file():
        print(f"skipped: SciFact not found at {args.data}", file=sys.stderr)
        return 0
    work = args.workdir or Path(tempfile.mkdtemp(prefix="semsearch-recall-"))
    base = work / "sentences"
    if not base.exists():
        started = time.perf_counter()
        docs = sentences(args.data / "corpus.jsonl", 300 if args.quick else None)
        Index.build(base, docs)[0].close()
        print(f"built the sentence index in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    index = Index.open(base)
    n_docs, n_passages = index.store.counts()
    qvecs = index.encoder.encode(claims(args.data / "queries.jsonl")[: 100 if args.quick else None])
    encoder = index.encoder
    index.close()
    if args.proxies:
        curves = proxy_curves(base, qvecs)
        print(f"machine: {cpu_line()}; {runs_line(encoder)}; {n_passages:,} sentence vectors")
        keys = [k for k in curves[0] if k not in ("queries", "lists")]
        print(f"recall@10 by setting (ivf with {curves[0]['lists']} lists; hnsw M=32)")
        print(f"{'queries':<16}" + "".join(f"{k:>13}" for k in keys))
        for c in curves:
            print(f"{c['queries']:<16}" + "".join(f"{c[k]:>13.3f}" for k in keys))
        print(json.dumps({"benchmark": "recall-proxies", **cpu_info(), "curves": curves}))
        return 0
    exact, exact_s = search_all(base, qvecs)
    rows = [{"type": "flat", "settings": "exact", "recall_at_10": 1.0,
             "p50_ms": round(1000 * statistics.median(exact_s), 2)}]
    for kind in args.types:
        copy = work / f"sentences-{kind}"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(base, copy)
        started = time.perf_counter()
        with Index.open(copy) as typed:
            typed.rebuild(index_type=kind, target_recall=args.target_recall)
            tuning = typed.config.get("search_tuning") or {}
            described = typed.info().vector_index
        build_s = time.perf_counter() - started
        for tuned in (False, True):
            if not tuned:
                with Index.open(copy) as typed, typed.writer() as writer:
                    saved = typed.config.get("search_tuning")
                    writer.record({"search_tuning": None})
            else:
                with Index.open(copy) as typed, typed.writer() as writer:
                    writer.record({"search_tuning": saved})
            found, seconds = search_all(copy, qvecs)
            recall = statistics.mean(len(set(f) & set(e)) / max(1, len(e)) for f, e in zip(found, exact))
            rows.append({"type": kind, "vector_index": described,
                         "settings": tuning.get("settings") if tuned else "defaults",
                         "recall_at_10": round(recall, 4), "p50_ms": round(1000 * statistics.median(seconds), 2),
                         "tuned_sample_recall": tuning.get("recall") if tuned else None,
                         "build_and_tune_s": round(build_s, 1), "tuning_s": tuning.get("seconds")})
        shutil.rmtree(copy, ignore_errors=True)
    print(f"machine: {cpu_line()}; {runs_line(encoder)}")
    print(f"SciFact sentences: {n_docs:,} documents ({n_passages:,} passages); {len(qvecs)} claims; "
          f"recall@10 of documents against exact search; target {args.target_recall}")
    print(f"{'type':>6} {'settings':<28} {'recall@10':>9} {'p50 ms':>7}  {'sample recall':>13} {'build+tune s':>12}")
    for r in rows:
        sample = "" if r.get("tuned_sample_recall") is None else f"{r['tuned_sample_recall']:.3f}"
        build = "" if "build_and_tune_s" not in r else f"{r['build_and_tune_s']:.1f}"
        print(f"{r['type']:>6} {str(r['settings']):<28} {r['recall_at_10']:>9.4f} {r['p50_ms']:>7.2f}  "
              f"{sample:>13} {build:>12}")
    print(json.dumps({"benchmark": "recall", **cpu_info(), "documents": n_docs, "passages": n_passages,
                      "queries": len(qvecs), "target_recall": args.target_recall, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
