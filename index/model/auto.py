"""``--backend auto`` on a CPU: survey the candidates once, cache the choice, compose the encoder.

Owns ``load`` (a cached choice for this model, CPU and candidate set, or a
new ``survey``; then the encoder: the query candidate's, with the bulk
candidate's runner attached for batches when they differ, loaded on first
use), ``survey`` (build every candidate, time them with ``measure``, decide
with ``choice.decide``; ``semsearch doctor`` shows it) and ``this_cpu``.
The runners themselves come from ``assemble`` through a ``Build`` function,
so this module imports no backend.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Callable

from . import choice as rules
from . import model_cache
from . import precision as policy
from .config import EncoderConfig
from .measure import measure
from .model_files import ModelFacts, check_layer, resolve_max_length
from .onnx_runner import cpu_threads

log = logging.getLogger("semsearch")
# Build(candidate name) -> an Encoder running it, or None when that backend cannot serve the model.
Build = Callable[[str], object]


def this_cpu() -> str:
    """The cache's key of this CPU: model name, flags and the CPUs this process may use."""
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            model = next((line for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    return rules.cpu_key(model.strip(), policy.cpu_flags(), cpu_threads())


def candidate_names(request: EncoderConfig, path: str) -> list[str]:
    facts = ModelFacts.read(path)
    exportable = facts is not None and facts.plain_bert
    return rules.candidates(request.precision, policy.cpu_supports_bf16(), exportable)


def choice_key(fingerprint: str, request: EncoderConfig, path: str, names: list[str]) -> str:
    facts = ModelFacts.read(path)
    layer_index = check_layer(request.layer, facts.num_layers) % (facts.num_layers + 1)
    max_length = resolve_max_length(request.max_length, path, facts.max_positions, 0)
    return (f"{fingerprint}-l{layer_index}-t{max_length}-{request.precision}-{this_cpu()}"
            f"-c{rules.set_key(names)}")


@dataclass
class Survey:
    """Every candidate that loaded, its timings and the choice they give."""

    names: list[str]  # the candidates weighed
    available: list[str]  # those that loaded and passed their accuracy checks
    timings: rules.Timings
    choice: rules.Choice
    cpu: str
    encoders: dict[str, object] = field(default_factory=dict, repr=False)
    probe_cosine: float | None = None  # torch bf16 against fp32 on the probe texts


def survey(request: EncoderConfig, path: str, build: Build, rounds: int | None = None,
           refuse: Callable[[str], None] | None = None) -> Survey:
    """Build the candidates, time them (interleaved) and decide. ``refuse(fingerprint)`` stops before
    exporting a graph of a model that is not the one expected."""
    names = candidate_names(request, path)
    torch_name = rules.TORCH_BF16 if rules.TORCH_BF16 in names else rules.TORCH_FP32
    torch_side = build(torch_name)  # under auto precision bf16 is kept only if its probe passes
    if refuse is not None:
        refuse(torch_side.fingerprint)
    natural = torch_side.precision
    encoders = {rules.name_of("torch", natural): torch_side}
    if rules.ONNX_FP32 in names:
        onnx_side = build(rules.ONNX_FP32)
        if onnx_side is not None:
            encoders[rules.ONNX_FP32] = onnx_side
    available = [n for n in names if n in encoders or (n == rules.TORCH_FP32 and natural != "fp32")]
    runner = torch_side.runner

    def with_torch(precision: str):
        def encode(texts):
            if runner.precision != precision:
                runner.set_precision(precision)
            return torch_side.encode(texts, warn=False)
        return encode

    timed = {n: (with_torch(rules.split(n)[1]) if n.startswith("torch") else
                 (lambda texts, e=encoders[n]: e.encode(texts, warn=False))) for n in available}
    fixed = request.precision == "bf16"  # asked for: bulk stays bf16, nothing to measure
    timings = rules.Timings() if fixed or len(available) < 2 else measure(timed, **(
        {"rounds": rounds} if rounds else {}))
    if runner.precision != natural:
        runner.set_precision(natural)
    decided = rules.decide(timings, available)
    return Survey(names=names, available=available, timings=timings, choice=decided, cpu=this_cpu(),
                  encoders=encoders, probe_cosine=torch_side.probe_cosine)


def load(request: EncoderConfig, path: str, build: Build, refuse: Callable[[str], None]):
    """The encoder ``auto`` runs for ``request`` on this CPU (a plain BERT encoder's)."""
    names = candidate_names(request, path)
    if request.precision == "bf16":  # asked for (or recorded): bulk in bf16, queries on the graph; no timing
        return compose(rules.decide(rules.Timings(), names), {}, build)
    fingerprint = model_cache.known_fingerprint(path)
    decided, encoders, probe = None, {}, None
    if fingerprint:
        stored = model_cache.load_choice(choice_key(fingerprint, request, path, names))
        decided = rules.reusable(stored, this_cpu(), names)
        probe = stored.get("probe_cosine") if decided is not None else None
    if decided is None:
        log.info("measuring the backends for %s on this CPU (once per model and CPU)", request.model)
        found = survey(request, path, build, refuse=refuse)
        decided, encoders, probe = found.choice, found.encoders, found.probe_cosine
        fingerprint = found.encoders[next(iter(found.encoders))].fingerprint
        model_cache.store_choice(choice_key(fingerprint, request, path, names),
                                 {**rules.record(decided, found.timings, found.cpu, names, found.available),
                                  "probe_cosine": probe})
        if request.precision == "auto" and rules.split(decided.bulk)[1] == "fp32":
            # an index records the precision in use (fp32): reopening it asks for fp32, same choice
            as_fp32 = replace(request, precision="fp32")
            fp32_names = candidate_names(as_fp32, path)
            model_cache.store_choice(choice_key(fingerprint, as_fp32, path, fp32_names),
                                     rules.record(decided, found.timings, found.cpu, fp32_names,
                                                  [n for n in found.available if n in fp32_names]))
    encoder = compose(decided, encoders, build)
    if rules.split(decided.bulk) == (encoder.backend, encoder.precision) and encoder.precision != "fp32":
        encoder.probe_cosine = probe if encoder.probe_cosine is None else encoder.probe_cosine
    return encoder


def compose(decided: rules.Choice, encoders: dict[str, object], build: Build):
    """The query candidate's encoder, with the bulk candidate attached when it differs."""
    query = encoders.get(decided.query) or build(decided.query)
    if query is None:  # the graph could not be made this time: the bulk candidate serves both
        return encoders.get(decided.bulk) or build(decided.bulk)
    if decided.bulk == decided.query:
        return query
    backend, precision = rules.split(decided.bulk)
    ready = encoders.get(decided.bulk)
    if ready is None and backend == "torch":  # the surveyed torch encoder may run either precision
        ready = next((e for n, e in encoders.items() if n.startswith("torch")), None)

    def load_bulk():
        bulk = ready if ready is not None else build(decided.bulk)
        if bulk.runner.precision != precision and precision == "fp32":
            bulk.runner.set_precision("fp32")
        return bulk.runner

    query.use_for_bulk(backend, precision, load_bulk)
    return query
