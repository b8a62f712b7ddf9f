"""Retrieval evaluation in the BEIR / trec_eval convention.

Inputs are the usual BEIR files, read by ``search.beir`` (``load_queries``,
``load_qrels``, also importable from here).

A *run* is a mapping ``query id -> ranked doc ids`` (best first).
:func:`plan_evaluation` and :func:`evaluate_index` run a benchmark against a
``Searcher``;
:func:`evaluate` scores a run with nDCG@10, MRR@10 and Recall@k, computed the way
trec_eval / pytrec_eval compute ``ndcg_cut_10``, ``recip_rank`` (cut at 10) and
``recall_k``; :func:`format_table` prints results side by side and
:func:`spearman` compares two score lists (e.g. per-query nDCG of two models).

Pure Python + numpy; no other dependency.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from index.errors import SemsearchError

from .beir import EvalQuery, load_qrels, load_queries

__all__ = [
    "EvalQuery",
    "EvalResult",
    "load_queries",
    "load_qrels",
    "evaluate",
    "spearman",
    "format_table",
    "EvalPlan",
    "plan_evaluation",
    "evaluate_index",
]

NDCG_CUT = 10
MRR_CUT = 10
DEFAULT_KS: tuple[int, ...] = (1, 5, 10, 100)



# --------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------


@dataclass
class EvalResult:
    """Mean metrics over the evaluated queries."""

    queries: int
    ndcg_at_10: float
    mrr_at_10: float
    recall: dict[int, float]

    def as_dict(self) -> dict:
        """Flat dict: ``queries``, ``ndcg@10``, ``mrr@10``, ``recall@K`` per K."""
        flat: dict = {
            "queries": self.queries,
            "ndcg@10": self.ndcg_at_10,
            "mrr@10": self.mrr_at_10,
        }
        for k in sorted(self.recall):
            flat[f"recall@{k}"] = self.recall[k]
        return flat


def _dedupe(ranking: Iterable[str]) -> list[str]:
    """Keep the first occurrence of each doc id, preserving order."""
    return list(dict.fromkeys(ranking))


def _dcg(gains: Iterable[int]) -> float:
    """Discounted cumulative gain: sum of ``gain / log2(rank + 1)``, rank from 1."""
    return sum(gain / math.log2(rank + 1) for rank, gain in enumerate(gains, start=1))


def evaluate(
    run: Mapping[str, Sequence[str]],
    qrels: Mapping[str, Mapping[str, int]],
    ks: Iterable[int] = DEFAULT_KS,
) -> EvalResult:
    """Score a run against qrels; every metric is a plain mean over queries.

    Evaluated queries are those of ``qrels`` with at least one doc of score
    > 0; one of them that is missing from ``run`` counts with an empty ranking
    (all metrics 0). Run queries that are not evaluated are ignored. Within a
    ranking a repeated doc id counts once, at its first position (later copies
    are dropped, so the docs after them move up).

    * nDCG@10 -- linear gain (the relevance grade), discount
      ``1 / log2(rank + 1)``; the ideal DCG uses the query's judged grades
      sorted descending, cut at 10 (trec_eval ``ndcg_cut_10``).
    * MRR@10 -- ``1 / rank`` of the first relevant doc in the top 10, else 0.
    * Recall@k -- ``|relevant in top k| / |relevant|`` for each k in ``ks``.

    With no evaluated queries every mean is 0.0 and ``queries`` is 0.
    """
    cuts = sorted(set(ks))
    if any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in cuts):
        raise ValueError(f"ks must be positive integers, got {tuple(ks)!r}")

    ndcg_sum = 0.0
    mrr_sum = 0.0
    recall_sums = {k: 0.0 for k in cuts}
    evaluated = 0
    for query_id, judged in qrels.items():
        relevant = {doc for doc, grade in judged.items() if grade > 0}
        if not relevant:
            continue
        evaluated += 1
        ranking = _dedupe(run.get(query_id, ()))

        top = ranking[:NDCG_CUT]
        ideal = sorted((max(g, 0) for g in judged.values()), reverse=True)[:NDCG_CUT]
        ndcg_sum += _dcg(max(judged.get(doc, 0), 0) for doc in top) / _dcg(ideal)

        for rank, doc in enumerate(ranking[:MRR_CUT], start=1):
            if doc in relevant:
                mrr_sum += 1.0 / rank
                break

        for k in cuts:
            recall_sums[k] += len(relevant.intersection(ranking[:k])) / len(relevant)

    def mean(total: float) -> float:
        return total / evaluated if evaluated else 0.0

    return EvalResult(
        queries=evaluated,
        ndcg_at_10=mean(ndcg_sum),
        mrr_at_10=mean(mrr_sum),
        recall={k: mean(total) for k, total in recall_sums.items()},
    )


# --------------------------------------------------------------------------
# Rank correlation
# --------------------------------------------------------------------------


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n; tied values share the mean of the ranks they span."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    # start index of each run of equal values, and the run lengths
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    lengths = np.diff(np.r_[starts, len(values)])
    group_rank = starts + (lengths + 1) / 2.0  # mean of ranks start+1 .. start+len
    ranks = np.empty(len(values), dtype=float)
    ranks[order] = np.repeat(group_rank, lengths)
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation, ties given average ranks.

    Matches ``scipy.stats.spearmanr(x, y).statistic``: ``nan`` when an input
    is constant, has fewer than two values, or contains NaN. Raises
    :class:`ValueError` when the inputs differ in length.
    """
    a = np.asarray(x, dtype=float).ravel()
    b = np.asarray(y, dtype=float).ravel()
    if a.shape != b.shape:
        raise ValueError(f"spearman: x and y differ in length ({a.size} != {b.size})")
    if a.size < 2 or np.isnan(a).any() or np.isnan(b).any():
        return float("nan")
    ra = _average_ranks(a)
    rb = _average_ranks(b)
    ra -= ra.mean()
    rb -= rb.mean()
    denom = math.sqrt(float(ra @ ra) * float(rb @ rb))
    if denom == 0.0:
        return float("nan")
    return float(max(-1.0, min(1.0, float(ra @ rb) / denom)))


# --------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------


def format_table(rows: Sequence[tuple[str, EvalResult]]) -> str:
    """Plain-text table, one line per ``(label, result)``, numbers to 4 decimals.

    Columns: ``run  queries  nDCG@10  MRR@10  R@k...`` with one ``R@k`` column
    per recall cut found in the results (``R@1 R@5 R@10 R@100`` by default);
    a cut a result lacks shows ``-``. Labels are left-aligned, numbers
    right-aligned, columns separated by two spaces.
    """
    cuts = sorted({k for _, result in rows for k in result.recall}) or list(DEFAULT_KS)
    header = ["run", "queries", "nDCG@10", "MRR@10"] + [f"R@{k}" for k in cuts]
    body = [
        [label, str(result.queries), f"{result.ndcg_at_10:.4f}", f"{result.mrr_at_10:.4f}"]
        + [f"{result.recall[k]:.4f}" if k in result.recall else "-" for k in cuts]
        for label, result in rows
    ]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def render(cells: list[str]) -> str:
        parts = [cells[0].ljust(widths[0])]
        parts += [cell.rjust(width) for cell, width in zip(cells[1:], widths[1:])]
        return "  ".join(parts).rstrip()

    return "\n".join(render(line) for line in [header, *body])


# --------------------------------------------------------------------------
# Running an index against a benchmark
# --------------------------------------------------------------------------


@dataclass
class EvalPlan:
    """The judged queries of a benchmark, ready to run: those with text, the empty ones (they
    count as retrieving nothing) and the relevance judgements."""

    queries: list[EvalQuery]
    empty: list[str]
    qrels: dict[str, dict[str, int]]


def plan_evaluation(queries_path: str | os.PathLike[str], qrels_path: str | os.PathLike[str]) -> EvalPlan:
    """Read a benchmark; queries missing from the qrels are left out."""
    qrels = load_qrels(qrels_path)
    queries = [q for q in load_queries(queries_path) if q.id in qrels]
    if not queries:
        raise SemsearchError(f"no query of {os.fspath(queries_path)} appears in {os.fspath(qrels_path)}")
    empty = [q.id for q in queries if not q.text.strip()]
    return EvalPlan([q for q in queries if q.text.strip()], empty, qrels)


def evaluate_index(searcher: Any, plan: EvalPlan, *, depth: int = 100, batch: int = 64,
                   progress: Callable[[int], None] | None = None, where: dict | None = None) -> EvalResult:
    """Run the plan's queries through ``searcher`` (``depth`` documents each, ``batch``
    queries per call) and score the run. ``where`` filters every query, ANDed with a query's
    own ``"where"``."""
    run: dict[str, list[str]] = {query_id: [] for query_id in plan.empty}
    for start in range(0, len(plan.queries), batch):
        chunk = plan.queries[start : start + batch]
        groups: dict[str, list] = {}  # one call per distinct filter
        for q in chunk:
            own = [f for f in (where, q.where) if f]
            combined = None if not own else own[0] if len(own) == 1 else {"$and": own}
            groups.setdefault(json.dumps(combined, sort_keys=True), [combined, []])[1].append(q)
        for combined, queries in groups.values():
            extra = {"where": combined} if combined else {}
            for q, hits in zip(queries, searcher.search_many([q.text for q in queries], k=depth, **extra)):
                run[q.id] = [h.id for h in hits]
        if progress is not None:
            progress(len(chunk))
    return evaluate(run, plan.qrels)
