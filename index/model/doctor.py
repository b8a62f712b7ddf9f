"""``semsearch doctor``: the candidates of ``--backend auto`` measured now on this machine, and the choice.

Owns ``diagnose`` (a fresh ``auto.survey``: every candidate built, timed in
interleaved rounds on long texts, short texts and single queries, and decided
by the same rules as ``auto``), the cached choice a process would use now, and
the small records it returns (``Diagnosis``, ``CandidateSpeed``). It changes
nothing: the cache keeps its choice.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from .. import options
from . import auto, model_cache
from . import choice as rules
from . import precision as policy
from .assemble import builder
from .config import EncoderConfig, resolve_model
from .encoder import Encoder
from .measure import workload_texts
from .onnx_runner import cpu_threads


@dataclass
class CandidateSpeed:
    """One candidate's medians: texts per second in a batch (long, short) and one query's milliseconds."""

    name: str
    long_texts_per_s: float | None
    short_texts_per_s: float | None
    query_ms: float | None


@dataclass
class Diagnosis:
    cpu: str
    threads: int
    bf16_instructions: bool
    model: str
    candidates: list[str]  # weighed for this request
    available: list[str]  # loaded and passed their accuracy checks
    speeds: list[CandidateSpeed]
    bulk: str
    query: str
    bulk_reason: str
    query_reason: str
    rounds: int
    bf16_probe_cosine: float | None = None
    cached: dict[str, str] | None = None  # the choice cached for this CPU, which processes use
    torch_build: str | None = None  # "direct" (from model.safetensors, no transformers) or "transformers"
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return os.uname().machine


def diagnose(model: str | None = None, *, layer: int | None = None, pooling: str | None = None,
             max_length: int | None = None, precision: str | None = None, rounds: int = 3,
             batch_size: int = options.DEFAULT_BATCH_SIZE) -> Diagnosis:
    """Measure ``auto``'s candidates for ``model`` (None: the embedded one) now, on this CPU."""
    request = EncoderConfig.for_model(model, layer=layer, pooling=pooling, max_length=max_length,
                                      precision=precision, backend="auto").request()
    policy.choose_precision(request.precision, "cpu")  # refuses an unknown one in one line
    name, path = resolve_model(request.model)
    names = auto.candidate_names(request, path)
    notes = []
    if rules.ONNX_FP32 not in names:
        notes.append(f"{name} cannot be exported to ONNX Runtime: auto runs it on torch")
    found = auto.survey(request, path, builder(Encoder, request, name, path, batch_size), rounds=rounds)
    texts = workload_texts()
    speeds = []
    for n in found.available:
        long, short, query = (found.timings.median(n, w) for w in rules.WORKLOADS)
        speeds.append(CandidateSpeed(
            name=n, long_texts_per_s=round(len(texts["long"]) / long, 1) if long else None,
            short_texts_per_s=round(len(texts["short"]) / short, 1) if short else None,
            query_ms=round(query * 1000, 2) if query else None))
    fingerprint = model_cache.known_fingerprint(path)
    cached = None
    if fingerprint:
        stored = model_cache.load_choice(auto.choice_key(fingerprint, request, path, names))
        kept = rules.reusable(stored, auto.this_cpu(), names)
        cached = None if kept is None else {"bulk": kept.bulk, "query": kept.query}
    if not found.timings.seconds:
        notes.append("one candidate for bulk encoding: nothing to measure")
    torch_side = next((e for n, e in found.encoders.items() if n.startswith("torch")), None)
    torch_build = None
    if torch_side is not None:
        from .direct import DirectBert

        torch_build = "direct" if isinstance(torch_side.runner.model, DirectBert) else "transformers"
    return Diagnosis(
        cpu=cpu_name(), threads=cpu_threads(), bf16_instructions=policy.cpu_supports_bf16(), model=name,
        candidates=found.names, available=found.available, speeds=speeds, bulk=found.choice.bulk,
        query=found.choice.query, bulk_reason=found.choice.bulk_reason, query_reason=found.choice.query_reason,
        rounds=rounds, bf16_probe_cosine=found.probe_cosine, cached=cached, torch_build=torch_build, notes=notes)
