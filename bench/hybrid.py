"""Hybrid retrieval, measured: nDCG@10 of the vectors, BM25 alone and their fusion.

For each BEIR dataset (SciFact and StackFAQ in ../shared/data) an index is
built once with ``hybrid=True`` (the embedded model, ``--layer``, -1 by
default; the BM25 index is saved with it), and its queries are run three
ways through the library: ``Searcher.search_many(..., hybrid=False)`` (the
vectors), ``Searcher.search_bm25`` (BM25 alone) and ``hybrid=True`` (the
z-score fusion of ``search/hybrid.py``). ``semsearch eval --hybrid`` / ``--no-hybrid`` give the same dense
and hybrid figures. Also reported: the time to build and save the BM25
index from the stored passages (what every write to a hybrid index pays
again) and its size on disk. Prints the CPU, a table and one JSON line.

    python bench/hybrid.py                                  # both datasets, indexes in a temporary folder
    python bench/hybrid.py --work /tmp/hyb --datasets stackfaq --precision fp32
    python bench/hybrid.py --work /tmp/hyb                  # reuses the indexes already there
    python bench/hybrid.py --layer -2 --fit-queries         # SciFact's 809 training claims in the whitening fit
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hostinfo import cpu_info, cpu_line  # noqa: E402  (bench/ is on sys.path as the script's folder)

from index import Index  # noqa: E402
from index.storage.query_sample import record_queries  # noqa: E402
from index.ingest.sources import read_documents  # noqa: E402
from index.lexical.bm25 import LexicalIndex, bm25_folders  # noqa: E402
from index.storage.folder import is_index  # noqa: E402
from search.beir import load_qrels, load_queries  # noqa: E402
from search.evaluation import evaluate_index, format_table, plan_evaluation  # noqa: E402
from search.searcher import Searcher  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
DATASETS = ("scifact", "stackfaq")


class BM25Only:
    """``search_many`` for ``evaluate_index``: BM25 alone."""

    def __init__(self, searcher: Searcher):
        self.searcher = searcher

    def search_many(self, queries, k=10):
        return self.searcher.search_bm25(queries, k=k)


class Mode:
    """``search_many`` for ``evaluate_index`` with hybrid on or off."""

    def __init__(self, searcher: Searcher, hybrid: bool):
        self.searcher, self.hybrid = searcher, hybrid

    def search_many(self, queries, k=10):
        return self.searcher.search_many(queries, k=k, hybrid=self.hybrid)


def open_or_build(path: Path, corpus: Path, layer: int, precision: str | None) -> tuple[Index, float | None]:
    """The index at ``path`` if one of this layer is there (made hybrid if it was not), else built."""
    if is_index(path):
        index = Index.open(path)
        if index.config["layer"] == layer and index.config.get("complete", True):
            if not index.setting("hybrid"):
                index.set_setting("hybrid", True)  # saves the BM25 index of the current generation
            return index, None
        index.close()
    started = time.monotonic()
    index, _ = Index.build(path, read_documents([str(corpus)]), force=True, layer=layer,
                           precision=precision, hybrid=True)
    return index, time.monotonic() - started


def record_past_queries(index: Index, folder: Path, fit_queries: bool) -> int:
    """With ``fit_queries``, the dataset's queries that its test qrels do not judge (SciFact's 809
    training claims; StackFAQ has none) recorded for the whitening fit (``index fit-queries``);
    without, none. Returns how many are recorded."""
    if not (index.config.get("whitening_fit") or {}).get("whiten"):
        return 0
    judged = set(load_qrels(folder / "qrels" / "test.tsv"))
    past = [q.text for q in load_queries(folder / "queries.jsonl") if q.id not in judged] if fit_queries else []
    return record_queries(index, past)


def measure(name: str, data: Path, work: Path, layer: int, precision: str | None, fit_queries: bool) -> dict:
    folder = data / name
    index, build_s = open_or_build(work / name, folder / "corpus.jsonl", layer, precision)
    recorded_queries = record_past_queries(index, folder, fit_queries)
    docs, passages = index.store.counts()
    with index.store.transaction(immediate=False):
        started = time.monotonic()
        lexical = LexicalIndex.build(index.store, index.store.generation())
        bm25_build_s = time.monotonic() - started
    with tempfile.TemporaryDirectory() as tmp:
        started = time.monotonic()
        saved = lexical.save(Path(tmp))
        bm25_save_s = time.monotonic() - started
        bm25_bytes = sum(f.stat().st_size for f in saved.iterdir())
    assert list(bm25_folders(index.path)) == [index.store.generation()], "the index has no saved BM25 index"
    plan = plan_evaluation(folder / "queries.jsonl", folder / "qrels" / "test.tsv")
    searcher = Searcher(index)
    results, seconds = {}, {}
    for mode, runner in (("dense", Mode(searcher, False)), ("bm25", BM25Only(searcher)),
                         ("hybrid", Mode(searcher, True))):
        started = time.monotonic()
        results[mode] = evaluate_index(runner, plan)
        seconds[mode] = time.monotonic() - started
    recorded = index.info()
    print(f"\n{name}: {docs:,} documents, {passages:,} passages, layer {layer}, bulk {recorded.bulk}, "
          f"queries {recorded.query}, "
          f"{len(plan.queries)} queries; whitening: {(index.config.get('whitening_fit') or {}).get('source', 'none')}")
    print(format_table([(mode, r) for mode, r in results.items()]))
    print(f"BM25 index: built in {bm25_build_s:.2f} s, saved in {bm25_save_s:.2f} s, {bm25_bytes / 1e6:.1f} MB")
    return {
        "dataset": name, "documents": docs, "passages": passages, "layer": layer,
        "precision": index.config["precision"], "bulk": recorded.bulk, "query": recorded.query,
        "queries": len(plan.queries), "recorded_queries": recorded_queries,
        "index_build_s": None if build_s is None else round(build_s, 1),
        "bm25_build_s": round(bm25_build_s, 3), "bm25_save_s": round(bm25_save_s, 3), "bm25_bytes": bm25_bytes,
        **{f"{mode}_ndcg@10": round(r.ndcg_at_10, 4) for mode, r in results.items()},
        **{f"{mode}_recall@100": round(r.recall[100], 4) for mode, r in results.items()},
        **{f"{mode}_eval_s": round(s, 1) for mode, s in seconds.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--work", type=Path, default=None, help="Where the indexes go (kept and reused); "
                        "default: a temporary folder")
    parser.add_argument("--layer", type=int, default=-1)
    parser.add_argument("--precision", default=None, help="Encoding precision (default: the product's auto).")
    parser.add_argument("--fit-queries", action="store_true",
                        help="Record each dataset's queries outside its test qrels for the whitening fit first "
                             "(SciFact's training claims; `index fit-queries`); without it, any recorded are cleared")
    parser.add_argument("--quick", action="store_true", help="StackFAQ only (125 documents): a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.datasets = ["stackfaq"]
    print(cpu_line())
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows = [measure(name, args.data, work, args.layer, args.precision, args.fit_queries) for name in args.datasets]
    print(json.dumps({"benchmark": "hybrid", **cpu_info(), "results": rows}))


if __name__ == "__main__":
    main()
