"""Whitening, measured: the method's raw layer −2 vectors against whitened ones (and fewer dimensions).

The embedded model, layer −2 mean (the default). For SciFact, StackFAQ
and StackFAQ with its answers as the documents (../shared/data) one index
is built with ``--whitening off`` (and a BM25 index), evaluated, then
refitted in place with ``index rebuild --whitening ...`` (the stored
vectors are re-used: nothing is encoded again but the fit's background and
the corpus's sentences) and evaluated again; each configuration also fused
with BM25 (``--hybrid``). The row "whitened, no sentences" is the default
fit without the sample of the corpus's own sentences
(``index/model/fit_sentences.py``), as fits were made before it.
"manpages" is a help-page set made of this machine's man(1) pages and 48
plain questions (``bench/manpages.py``; skipped where ``man`` is missing).
STSb and KorSTS: the Spearman correlation of the test pairs' cosines with
the gold scores, the transform fitted by indexing the dev sentences (no
labels).
Also: the size of the FAISS file and the time of one query's vector search
(median over the queries, query vectors given) per configuration, and flat
search over 100,000 random passages at 384 and 128 dimensions. Each row
prints the commands that reproduce it. Prints the CPU, tables and one JSON line.

    python bench/whitening.py                       # every set; indexes in a temporary folder
    python bench/whitening.py --work /tmp/wh        # keeps the indexes (and reuses them)
    python bench/whitening.py --quick               # STSb 200 pairs and StackFAQ: a smoke run
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import manpages  # noqa: E402  (bench/ is on sys.path as the script's folder)
from hostinfo import cpu_info, cpu_line  # noqa: E402

from index import Index  # noqa: E402
from index.ann import registry  # noqa: E402
from index.model import fit_sentences  # noqa: E402
from index.ingest.sources import read_documents  # noqa: E402
from index.storage.folder import is_index  # noqa: E402
from search.evaluation import evaluate_index, plan_evaluation, spearman  # noqa: E402
from search.searcher import Searcher  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
# (label, --whitening, --whitening-dims, whether the fit pools the corpus's sentences: index/model/fit_sentences.py)
CONFIGS = [("raw (off)", "off", 0, True), ("whitened, no sentences", "auto", 0, False),
           ("whitened (auto)", "auto", 0, True), ("whitened, 256 dims", "on", 256, True),
           ("whitened, 128 dims", "on", 128, True)]
SENTENCES_OFF = "(fit_sentences.SIZE = 0: the fit as it was before it pooled the corpus's sentences)"


class Hybrid:
    """``search_many`` for ``evaluate_index``: the vectors fused with BM25."""

    def __init__(self, searcher: Searcher):
        self.searcher = searcher

    def search_many(self, queries, k=10):
        return self.searcher.search_many(queries, k=k, hybrid=True)


class Dense:
    """``search_many`` for ``evaluate_index`` from the queries' raw vectors, encoded once for every
    configuration (``Searcher.search_vectors`` whitens them as ``search`` does)."""

    def __init__(self, searcher: Searcher, vectors: dict[str, np.ndarray]):
        self.searcher, self.vectors = searcher, vectors

    def search_many(self, queries, k=10):
        return self.searcher.search_vectors(np.stack([self.vectors[q] for q in queries]), k=k)


def rebuild_command(path: str, mode: str, dims: int, sentences: bool = True) -> str:
    return (f"semsearch index rebuild --index {path} --whitening {mode} --whitening-dims {dims}"
            + ("" if sentences else f"   {SENTENCES_OFF}"))


def configure(index: Index, mode: str, dims: int, sentences: bool = True) -> None:
    """Refit ``index`` as the row asks (from the stored vectors: nothing is encoded again but the
    background and the corpus's sentences)."""
    size = fit_sentences.SIZE
    fit_sentences.SIZE = size if sentences else 0
    try:
        index.rebuild(whitening=mode, whitening_dims=dims)
    finally:
        fit_sentences.SIZE = size


def vector_search_ms(index: Index, vectors: np.ndarray) -> float:
    searcher = Searcher(index)
    times = []
    for row in vectors:
        started = time.perf_counter()
        searcher.search_vectors(row[None, :], k=10)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def answers_corpus(data: Path, work: Path) -> Path:
    """StackFAQ's answers as the documents (each entry's answers joined: several sentences each), for
    the same rewordings and qrels: a retrieval set of multi-sentence documents besides SciFact."""
    path = work / "stackfaq-answers-corpus.jsonl"
    with open(data / "stackfaq" / "corpus.jsonl", encoding="utf-8") as f, open(path, "w", encoding="utf-8") as out:
        for line in f:
            row = json.loads(line)
            out.write(json.dumps({"id": row["_id"], "text": "  ".join(row["metadata"]["answers"])}) + "\n")
    return path


def retrieval(name: str, data: Path, work: Path, hybrid: bool, quick: bool) -> list[dict]:
    folder, path = data / name.replace("-answers", ""), work / name
    corpus = answers_corpus(data, work) if name == "stackfaq-answers" else folder / "corpus.jsonl"
    queries_file, qrels_file = folder / "queries.jsonl", folder / "qrels" / "test.tsv"
    if name == "manpages":  # rendered from this machine's man(1) pages (bench/manpages.py)
        corpus, queries_file, qrels_file, pages, asked = manpages.build(work)
        print(f"manpages: {pages} pages of {manpages.MAN1}, {asked} questions", flush=True)
    if is_index(path) and Index.open(path).config.get("complete", True):
        index = Index.open(path)
    else:
        index, _ = Index.build(path, read_documents([str(corpus)]), force=True, whitening="off", hybrid=hybrid)
    plan = plan_evaluation(queries_file, qrels_file)
    if quick:
        plan.queries = plan.queries[:200]
        plan.qrels = {q.id: plan.qrels[q.id] for q in plan.queries}
    raw_queries = index.encoder.encode([q.text for q in plan.queries], warn=False)
    by_text = dict(zip([q.text for q in plan.queries], raw_queries))
    build = (f"semsearch index build {corpus} --index {path} --whitening off"
             + (" --hybrid" if hybrid else ""))
    evaluate = f"semsearch eval --queries {queries_file} --qrels {qrels_file} --index {path}"
    rows = []
    for label, mode, dims, sentences in CONFIGS:
        configure(index, mode, dims, sentences)
        index = Index.open(path)
        searcher = Searcher(index)
        dense = evaluate_index(Dense(searcher, by_text), plan).ndcg_at_10
        fused = evaluate_index(Hybrid(searcher), plan).ndcg_at_10 if hybrid else None
        with index.snapshot():  # the committed base and its deltas: what a reader loads
            faiss_bytes = sum((index.path / name).stat().st_size for name in index.generations.chain()
                              if (index.path / name).is_file())
        rows.append({"dataset": name, "configuration": label, "ndcg@10": round(dense, 4),
                     "hybrid_ndcg@10": None if fused is None else round(fused, 4), "faiss_bytes": faiss_bytes,
                     "search_ms_p50": round(vector_search_ms(index, raw_queries[:100]), 3),
                     "commands": [build, rebuild_command(str(path), mode, dims, sentences),
                                  evaluate + " --no-hybrid" + (f"; {evaluate} --hybrid" if hybrid else "")]})
    return rows


def sts_pairs(data: Path, name: str, split: str) -> list[tuple[str, str, float]]:
    """STSb (``stsb_en/stsb-en-<split>.csv``) or KorSTS (``korsts/sts-<split>.tsv``) pairs with gold scores."""
    if name == "korsts":
        with open(data / "korsts" / f"sts-{split}.tsv", newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
        return [(r[5], r[6], float(r[4])) for r in rows if len(r) >= 7]
    with open(data / "stsb_en" / f"stsb-en-{split}.csv", newline="", encoding="utf-8") as f:
        return [(r[0], r[1], float(r[2])) for r in csv.reader(f)]


def sts(data: Path, work: Path, quick: bool, name: str = "stsb") -> list[dict]:
    test, dev = sts_pairs(data, name, "test"), sts_pairs(data, name, "dev")
    if quick:
        test, dev = test[:200], dev[:300]
    sentences = list(dict.fromkeys([s for a, b, _ in dev for s in (a, b)]))
    path = work / (f"{name}-dev-quick" if quick else f"{name}-dev")
    if not is_index(path):
        Index.build(path, [{"id": str(i), "text": s} for i, s in enumerate(sentences)], whitening="off")
    rows = []
    for label, mode, dims, pooled in CONFIGS:
        index = Index.open(path)
        configure(index, mode, dims, pooled)
        index = Index.open(path)
        with index.snapshot() as snap:
            a = snap.whiten(index.encoder.encode([t[0] for t in test], warn=False))
            b = snap.whiten(index.encoder.encode([t[1] for t in test], warn=False))
        rows.append({"dataset": name, "configuration": label, "pairs": len(test),
                     "spearman": round(spearman((a * b).sum(axis=1), [t[2] for t in test]), 4),
                     "commands": [f"semsearch index build <the {len(sentences)} {name} dev sentences> --index {path} "
                                  "--whitening off", rebuild_command(str(path), mode, dims, pooled),
                                  "python bench/whitening.py --work " + str(work)]})
    return rows


def flat_speed(n: int, quick: bool) -> list[dict]:
    """Flat search over ``n`` random unit vectors, 384-d and 128-d (median of 50 single queries)."""
    rng = np.random.default_rng(0)
    rows = []
    for dim in (384, 128):
        vectors = rng.standard_normal((n, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        flat = registry.empty(dim)
        flat.add(np.arange(n, dtype=np.int64), vectors)
        times = []
        for q in vectors[: 20 if quick else 50]:
            started = time.perf_counter()
            flat.search(q[None, :], 10)
            times.append((time.perf_counter() - started) * 1000)
        rows.append({"passages": n, "dimension": dim, "search_ms_p50": round(statistics.median(times), 3)})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--work", type=Path, default=None, help="Where the indexes go (kept and reused)")
    parser.add_argument("--datasets", nargs="+",
                        default=["stsb", "korsts", "stackfaq", "stackfaq-answers", "scifact", "manpages"],
                        help="stsb, korsts (Spearman; fitted on the dev sentences), stackfaq, stackfaq-answers "
                             "(its answers as the documents), scifact, manpages (this machine's man(1) pages "
                             "asked 48 plain questions: bench/manpages.py; skipped without man) (nDCG@10)")
    parser.add_argument("--quick", action="store_true",
                        help="STSb (200 test pairs, fitted on 300 dev pairs) and 200 StackFAQ queries, no BM25")
    args = parser.parse_args()
    if not (args.data / "stackfaq").is_dir():
        print(f"skipped: evaluation data not found under {args.data}", file=sys.stderr)
        return 0
    if args.quick:
        args.datasets = ["stsb", "stackfaq"]
    try:
        import bm25s  # noqa: F401
        hybrid = not args.quick
    except ImportError:
        hybrid = False
    warnings.simplefilter("ignore")
    print(f"machine: {cpu_line()}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="semsearch-bench-whitening-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name in args.datasets:
            if name == "manpages" and not manpages.available():
                print("manpages: skipped (no man(1) pages or no man command here)", flush=True)
                continue
            rows += (sts(args.data, work, args.quick, name) if name in ("stsb", "korsts")
                     else retrieval(name, args.data, work, hybrid, args.quick))
    speed = flat_speed(10_000 if args.quick else 100_000, args.quick)
    print(f"\n{'dataset':<16} {'configuration':<23} {'score':>7} {'+BM25':>7} {'FAISS MB':>9} {'search ms':>9}")
    for r in rows:
        score = r.get("spearman", r.get("ndcg@10"))
        fused = r.get("hybrid_ndcg@10")
        size = r.get("faiss_bytes")
        print(f"{r['dataset']:<16} {r['configuration']:<23} {score:>7.4f} {'' if fused is None else f'{fused:.4f}':>7} "
              f"{'' if size is None else f'{size / 1e6:.2f}':>9} {r.get('search_ms_p50', ''):>9}")
        for command in r["commands"]:
            print(f"    $ {command}")
    print("(STSb, KorSTS: Spearman of the test pairs; StackFAQ (its questions or its answers as the documents), "
          "SciFact and manpages: nDCG@10; +BM25: hybrid, z-score fusion)")
    for s in speed:
        print(f"flat search, {s['passages']:,} random passages, {s['dimension']}-d: {s['search_ms_p50']} ms p50")
    print(json.dumps({"benchmark": "whitening", **cpu_info(), "results": rows, "flat_speed": speed}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
