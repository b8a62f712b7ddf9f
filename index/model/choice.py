"""The choice behind ``--backend auto``: which backend and precision encode bulk text and single queries.

Owns the candidates (``torch bf16``, ``torch fp32``, ``onnx fp32``), the rules,
``decide`` (a pure function of the measurements: the same timings always give
the same ``Choice``), ``cpu_key`` and which cached choice may be reused
(``reusable``). No torch and no clock here: ``measure`` times the candidates,
``auto`` builds the encoder the choice names.

The rules come first and a measurement may only overturn them by a clear
margin, so that noise in a short timing cannot flip the choice:

- bulk (build, add, rebuild, embed: batches): ``torch bf16`` on a CPU with
  bf16 instructions when the accuracy probe allows it (arithmetic dominates a
  batch, and bf16 halves it), else ``onnx fp32``, else ``torch fp32``. Another
  candidate replaces the rule's only when it was faster by ``MARGIN`` in every
  interleaved round, on long texts and on short ones.
- single queries: ``onnx fp32`` whenever the model has a graph (no torch
  import in a query process, the lowest per-call overhead, and fp32 is the
  reference itself), else the bulk choice.
"""

from __future__ import annotations

import hashlib
import statistics
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

CHOICE_VERSION = 3  # of the rules and the measurement: a record of another version is not used
MARGIN = 1.25  # a candidate overturns the rule only when this much faster in every round
WORKLOADS = ("long", "short", "query")  # long texts in a batch, short texts in a batch, one query alone
BULK_WORKLOADS = ("long", "short")
TORCH_BF16, TORCH_FP32, ONNX_FP32 = "torch bf16", "torch fp32", "onnx fp32"


def name_of(backend: str, precision: str) -> str:
    return f"{backend} {precision}"


def split(name: str) -> tuple[str, str]:
    """``(backend, precision)`` of a candidate name."""
    backend, precision = name.split(" ", 1)
    return backend, precision


def candidates(requested_precision: str, bf16_cpu: bool, exportable: bool) -> list[str]:
    """The candidates ``auto`` weighs for a precision request (``auto``, ``fp32`` or ``bf16``)."""
    if requested_precision == "bf16":
        names = [TORCH_BF16]  # asked for: bulk runs in bf16; queries may still use the fp32 graph
    else:
        names = ([TORCH_BF16] if requested_precision == "auto" and bf16_cpu else []) + [TORCH_FP32]
    return names + ([ONNX_FP32] if exportable else [])


@dataclass
class Timings:
    """Seconds per candidate, workload and round (rounds interleaved across candidates)."""

    seconds: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def add(self, name: str, workload: str, value: float) -> None:
        self.seconds.setdefault(name, {}).setdefault(workload, []).append(value)

    def median(self, name: str, workload: str) -> float | None:
        values = self.seconds.get(name, {}).get(workload)
        return statistics.median(values) if values else None

    def clearly_faster(self, fast: str, slow: str, workloads: Sequence[str] = BULK_WORKLOADS) -> bool:
        """True when ``fast`` beat ``slow`` by ``MARGIN`` in every round of every workload."""
        for workload in workloads:
            a = self.seconds.get(fast, {}).get(workload) or []
            b = self.seconds.get(slow, {}).get(workload) or []
            if not a or len(a) != len(b) or any(x * MARGIN > y for x, y in zip(a, b)):
                return False
        return True


@dataclass(frozen=True)
class Choice:
    """What ``auto`` runs: ``bulk`` and ``query`` are candidate names, with the reasons."""

    bulk: str
    query: str
    bulk_reason: str
    query_reason: str

    def as_dict(self) -> dict[str, str]:
        return {"bulk": self.bulk, "query": self.query, "bulk_reason": self.bulk_reason,
                "query_reason": self.query_reason}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Choice":
        return cls(bulk=d["bulk"], query=d["query"], bulk_reason=d.get("bulk_reason", ""),
                   query_reason=d.get("query_reason", ""))


def rule_bulk(available: Sequence[str]) -> tuple[str, str]:
    """The rule's bulk candidate among ``available`` (those that loaded and passed their probes)."""
    if TORCH_BF16 in available:
        return TORCH_BF16, "the CPU has bf16 instructions and bf16 passed the accuracy probe"
    if ONNX_FP32 in available:
        return ONNX_FP32, "no usable bf16: ONNX Runtime's fused fp32 graph"
    return TORCH_FP32, "the only exact candidate for this model"


def decide(timings: Timings, available: Sequence[str]) -> Choice:
    """The choice for the candidates that loaded (``available``) and their timings: deterministic."""
    bulk, reason = rule_bulk(available)
    beaten = [c for c in available if c != bulk and timings.clearly_faster(c, bulk)]
    if beaten:  # more than one clear winner: the fastest on long texts, then by name
        winner = min(beaten, key=lambda c: (timings.median(c, "long") or 0.0, c))
        reason = (f"measured faster than {bulk} (the rule's choice) by at least {MARGIN}x in every round, "
                  "on long and short texts")
        bulk = winner
    elif len(available) > 1 and timings.seconds:
        reason += f"; no other candidate was {MARGIN}x faster in every round"
    if ONNX_FP32 in available:
        query, query_reason = ONNX_FP32, "no torch import in a query process, and fp32 is the reference itself"
    else:
        query, query_reason = bulk, "no ONNX graph for this model: the bulk choice"
    return Choice(bulk=bulk, query=query, bulk_reason=reason, query_reason=query_reason)


# --- the cached record -----------------------------------------------------------------------------
def cpu_key(model_name: str, flags: set[str], threads: int) -> str:
    """This CPU, for the choice: model name, flags and thread count."""
    return hashlib.sha256(f"{model_name}|{' '.join(sorted(flags))}|{threads}".encode()).hexdigest()[:12]


def set_key(names: Sequence[str]) -> str:
    return hashlib.sha256(f"v{CHOICE_VERSION}|{'|'.join(names)}".encode()).hexdigest()[:8]


def record(choice: Choice, timings: Timings, cpu: str, names: Sequence[str], available: Sequence[str]) -> dict:
    return {**choice.as_dict(), "cpu": cpu, "candidates": list(names), "available": list(available),
            "version": CHOICE_VERSION, "seconds": timings.seconds}


def reusable(stored: Mapping[str, Any] | None, cpu: str, names: Sequence[str]) -> Choice | None:
    """The stored choice when it was made on this CPU, for these candidates, by these rules; else None."""
    if not stored or stored.get("cpu") != cpu or stored.get("candidates") != list(names):
        return None
    if stored.get("version") != CHOICE_VERSION:
        return None
    try:
        choice = Choice.from_dict(stored)
    except (KeyError, TypeError):
        return None
    if choice.bulk not in names or choice.query not in names:
        return None
    return choice
