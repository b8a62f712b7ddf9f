"""Timing the candidates of ``auto``: interleaved rounds on long texts, short texts and single queries.

Owns the measurement texts (built from ``precision.PROBE_TEXTS``: a batch of
long texts at the model's window, a batch of short sentences, and single
queries) and ``measure`` (every candidate once per workload per round, the
order rotated every round, after one warm-up), which returns
``choice.Timings`` for ``choice.decide``. No torch here: a candidate is a
function from texts to vectors.
"""

from __future__ import annotations

import time
from typing import Callable, Mapping, Sequence

from . import precision as policy
from .choice import Timings

ROUNDS = 3
LONG_TEXTS = 16  # a batch of long texts, each cut at the model's window
SHORT_TEXTS = 64
QUERIES = 3

Encode = Callable[[Sequence[str]], object]


def workload_texts() -> dict[str, list[str]]:
    """The texts of each workload: fixed, so every run times the same work."""
    base = policy.PROBE_TEXTS[:5]
    long = [" ".join(base[(i + j) % len(base)] for j in range(24)) for i in range(LONG_TEXTS)]
    short = [f"{base[i % len(base)]} ({i})" for i in range(SHORT_TEXTS)]
    return {"long": long, "short": short, "query": list(base[:QUERIES])}


def measure(candidates: Mapping[str, Encode], rounds: int = ROUNDS,
            clock: Callable[[], float] = time.perf_counter) -> Timings:
    """Seconds of each candidate on each workload, ``rounds`` times, interleaved."""
    texts = workload_texts()
    names = list(candidates)
    for name in names:  # warm-up: first calls allocate and pick kernels
        candidates[name](texts["short"][:8])
        candidates[name](texts["long"][:2])
    timings = Timings()
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            encode = candidates[name]
            for workload in ("long", "short"):
                started = clock()
                encode(texts[workload])
                timings.add(name, workload, clock() - started)
            started = clock()
            for query in texts["query"]:
                encode([query])
            timings.add(name, "query", (clock() - started) / len(texts["query"]))
    return timings
