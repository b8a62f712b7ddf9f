"""Choosing and building an encoder: which backend and precision run a model on this machine.

``load_encoder`` turns an ``EncoderConfig`` request into a working ``Encoder``:

- on a CUDA device, the torch backend (fp16 under ``auto``);
- ``int8``: ONNX Runtime with an int8 graph, refused when its probe vectors
  fall below ``precision.MIN_INT8_COSINE`` of the fp32 reference;
- ``bf16``/``fp16``: the torch backend (under ``--backend auto`` a bf16
  CPU's single queries may run on the fp32 ONNX graph);
- backend ``torch`` or ``onnx`` as asked; ``auto`` (``auto`` below, rules in
  ``choice``): bulk and single queries may each get their own candidate
  (torch bf16, torch fp32, ONNX fp32), chosen once per model and CPU, cached.

An ONNX graph is exported once per model fingerprint, layer, max length and
precision into the model cache, and used only after it reproduced the fp32
reference on the probe texts; when that is impossible the torch backend is
used, with a notice. With a cached graph and a known fingerprint, nothing
imports torch or transformers; the torch backend itself skips transformers
for a folder whose direct build (``direct``) was verified against it.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from .. import options
from ..errors import ConfigMismatchError, SemsearchError
from . import auto, model_cache
from . import precision as policy
from .config import EncoderConfig, resolve_model
from .model_files import ModelFacts, check_layer, resolve_max_length
from .onnx_runner import OnnxRunner
from .tokenizer import Tokenizer

GPU_BATCH_SIZE = 128  # a GPU wants far larger batches than 2 CPU cores
INT8_KEEP_FFN_BELOW = 0.995  # a fully int8 graph below this probe cosine keeps its FFN outputs in fp32

log = logging.getLogger("semsearch")
Make = Callable[..., "object"]  # the Encoder class


def load_encoder(make: Make, request: EncoderConfig, batch_size: int, device: str | None,
                 expect: str | None = None):
    if request.pooling not in options.POOLINGS:
        raise SemsearchError(f"unknown pooling {request.pooling!r}; choose one of {', '.join(options.POOLINGS)}")
    if request.backend not in options.BACKENDS:
        raise SemsearchError(f"unknown backend {request.backend!r}; choose one of {', '.join(options.BACKENDS)}")
    if batch_size < 1:
        raise SemsearchError("batch size must be at least 1")
    name, path = resolve_model(request.model)
    device = device or default_device()
    precision = policy.choose_precision(request.precision, device)
    backend = request.backend
    if device != "cpu":
        if backend == "onnx":
            warnings.warn(f"ONNX Runtime runs on the CPU; on {device} the torch backend is used", stacklevel=3)
        return torch_encoder(make, request, name, path, precision, batch_size, device)
    if precision == "int8":
        if backend == "torch":
            raise SemsearchError("int8 runs on ONNX Runtime; use --backend auto or onnx with --precision int8")
        return onnx_encoder(make, request, name, path, "int8", batch_size, strict=True, expect=expect)
    if backend == "onnx" and precision == "bf16" and request.precision == "bf16":
        raise SemsearchError("bf16 runs on the torch backend; use --backend auto or torch with --precision bf16")
    if backend == "torch":
        return torch_encoder(make, request, name, path, precision, batch_size, device)
    if backend == "onnx":
        return (onnx_encoder(make, request, name, path, "fp32", batch_size, strict=False, expect=expect)
                or torch_encoder(make, request, name, path, precision, batch_size, device))
    return automatic(make, request, name, path, precision, batch_size, expect)


def default_device() -> str:
    """``cuda`` when torch sees a GPU; torch is imported only where an NVIDIA driver is present."""
    if not any(Path(p).exists() for p in ("/dev/nvidiactl", "/proc/driver/nvidia/version")):
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# --- auto: the choice for this CPU (see ``auto`` and ``choice``) -------------------------------
def automatic(make: Make, request: EncoderConfig, name: str, path: str, precision: str, batch_size: int,
              expect: str | None = None):
    facts = ModelFacts.read(path)
    if facts is None or not facts.plain_bert:
        return torch_encoder(make, request, name, path, precision, batch_size, "cpu")
    return auto.load(request, path, builder(make, request, name, path, batch_size, expect),
                     lambda fingerprint: refuse_changed(name, fingerprint, expect))


def builder(make: Make, request: EncoderConfig, name: str, path: str, batch_size: int, expect: str | None = None):
    """``auto.Build``: the encoder of one candidate (``torch bf16``, ``torch fp32``, ``onnx fp32``); a graph
    is exported only for the model ``expect`` names (when given)."""
    def build(candidate: str):
        backend, precision = candidate.split(" ", 1)
        if backend == "onnx":
            return onnx_encoder(make, request, name, path, precision, batch_size, strict=False, expect=expect)
        return torch_encoder(make, request, name, path, precision, batch_size, "cpu")
    return build


# --- the torch backend ----------------------------------------------------------------------------
def torch_encoder(make: Make, request: EncoderConfig, name: str, path: str, precision: str,
                  batch_size: int, device: str):
    """The torch backend: built from the weight file alone where that was shown to give
    transformers' vectors for this folder (``direct``), else through transformers."""
    encoder = direct_encoder(make, request, name, path, precision, batch_size, device)
    return encoder if encoder is not None else library_encoder(make, request, name, path, precision, batch_size,
                                                               device)


def library_encoder(make: Make, request: EncoderConfig, name: str, path: str, precision: str,
                    batch_size: int, device: str):
    from . import bert, direct, loading

    hf_tokenizer, model = loading.load_model(name, path)
    num_layers = int(model.config.num_hidden_layers)
    tokenizer = Tokenizer.from_transformers(hf_tokenizer)
    fingerprint = loading.model_fingerprint(model, hf_tokenizer)  # of the whole model, before dropping layers
    model_cache.remember_fingerprint(path, fingerprint)
    layer = check_layer(request.layer, num_layers)
    runner = _fp32_runner(model, num_layers, layer, request, device,
                          token_types="token_type_ids" in hf_tokenizer.model_input_names)
    encoder = _torch_encoder(make, request, name, path, batch_size, runner, tokenizer, fingerprint, model.config)
    learn_direct = direct.possible(path) and model_cache.signature(path) is not None
    reference = encoder.encode(policy.PROBE_TEXTS, warn=False) if learn_direct else None  # fp32, the library's
    _reduce_precision(encoder, request, precision, reference)

    def probe_vectors(lean: bool):
        runner.lean = lean
        return encoder.encode(policy.PROBE_TEXTS, warn=False)

    runner.lean = bert.choose_lean(model.config, runner.truncated, probe_vectors)
    if reference is not None and runner.lean:
        def vectors_of(direct_model):
            twin = _fp32_runner(direct_model, num_layers, layer, request, device, token_types=True)
            twin.lean = True
            return _torch_encoder(make, request, name, path, batch_size, twin, tokenizer, fingerprint,
                                  model.config).encode(policy.PROBE_TEXTS, warn=False)

        if direct.verify(path, reference, vectors_of):
            model_cache.remember_direct(path, fingerprint, tokenizer, direct_check(encoder), reference)
        else:
            model_cache.forget_direct(path)
    return encoder


def direct_check(encoder) -> str:
    """The key of the probe vectors a direct build must reproduce: what shapes them besides the weights."""
    return f"l{encoder.layer_index}-{encoder.pooling}-t{encoder.max_length}"


def _fp32_runner(model, num_layers: int, layer: int, request: EncoderConfig, device: str, token_types: bool):
    """A TorchRunner of ``model`` in fp32, the layers above the pooled one dropped."""
    from .torch_runner import TorchRunner

    return TorchRunner(model, num_layers=num_layers, layer=layer, layer_index=layer % (num_layers + 1),
                       pooling=request.pooling, device=device, precision="fp32", token_types=token_types)


def direct_encoder(make: Make, request: EncoderConfig, name: str, path: str, precision: str,
                   batch_size: int, device: str):
    """The model built by ``direct.load`` with the tokenizer recorded when it was verified, or None
    where there is no valid record (the caller then goes through transformers)."""
    record = model_cache.direct_record(path)
    if record is None:
        return None
    from . import bert, direct

    model = direct.load(path)
    if model is None:
        return None
    num_layers = model.config.num_hidden_layers
    layer = check_layer(request.layer, num_layers)
    runner = _fp32_runner(model, num_layers, layer, request, device, token_types=True)
    if not runner.truncated:  # pragma: no cover - DirectBert always has its layer list
        return None
    runner.lean = True
    tokenizer = Tokenizer.from_file(record.tokenizer_file, pad_id=record.pad_id)
    encoder = _torch_encoder(make, request, name, path, batch_size, runner, tokenizer, record.fingerprint,
                             model.config)
    expected = record.checks.get(direct_check(encoder))
    if expected is None:  # this layer, pooling or length was not verified yet: the library does it
        return None
    reference = encoder.encode(policy.PROBE_TEXTS, warn=False)
    gap = float(np.abs(reference - np.asarray(expected, dtype=np.float32)).max())
    if gap > bert.TOLERANCE:  # the code computing it changed: transformers decides again
        log.info("direct BERT of %s differs from its recorded vectors by %.2g; loading through transformers",
                 name, gap)
        return None
    _reduce_precision(encoder, request, precision, reference)
    return encoder


def _torch_encoder(make: Make, request: EncoderConfig, name: str, path: str, batch_size: int, runner,
                   tokenizer: Tokenizer, fingerprint: str, config):
    """The Encoder of a torch ``runner`` (still fp32; ``_reduce_precision`` follows)."""
    max_positions = int(getattr(config, "max_position_embeddings", 512) or 512)
    max_length = resolve_max_length(request.max_length, path, max_positions, tokenizer.n_special)
    if runner.device.startswith("cuda") and batch_size == options.DEFAULT_BATCH_SIZE:
        batch_size = GPU_BATCH_SIZE
    return make(model_name=name, model_path=path, tokenizer=tokenizer, runner=runner, layer=runner.layer,
                num_layers=int(config.num_hidden_layers), dimension=int(config.hidden_size), pooling=request.pooling,
                max_length=max_length, batch_size=batch_size, fingerprint=fingerprint,
                backend_request=request.backend)


def _reduce_precision(encoder, request: EncoderConfig, precision: str, reference=None) -> None:
    """Run the fp32 encoder in ``precision``: under ``auto`` only if its probe passes (``reference``:
    its fp32 probe vectors, when already computed)."""
    from .torch_runner import probe_reduced_precision

    if precision == "fp32":
        return
    if request.precision == "auto":
        _, encoder.probe_cosine = probe_reduced_precision(
            encoder.runner, lambda texts: encoder.encode(texts, warn=False), precision, reference)
    else:
        encoder.runner.set_precision(precision)


# --- the ONNX Runtime backend -----------------------------------------------------------------
def onnx_encoder(make: Make, request: EncoderConfig, name: str, path: str, precision: str,
                 batch_size: int, strict: bool, expect: str | None = None):
    """An encoder on a cached (or newly exported and verified) graph; None (after a notice) when
    the model cannot be served this way, or an error when ``strict``."""
    facts = ModelFacts.read(path)
    if facts is None or not facts.plain_bert:
        return _cannot(f"model {name} cannot be exported to ONNX (only BERT encoders with absolute "
                       "positions are)", precision, strict)
    layer = check_layer(request.layer, facts.num_layers)
    layer_index = layer % (facts.num_layers + 1)
    max_length = resolve_max_length(request.max_length, path, facts.max_positions, 0)
    fingerprint = model_cache.known_fingerprint(path)
    built = None
    if fingerprint:
        built = model_cache.load_graph(model_cache.graph_key(fingerprint, layer_index, max_length, precision))
    if built is not None:
        graph, meta = str(built.graph_file), built.meta  # ONNX Runtime reads the file itself
        tokenizer = Tokenizer.from_file(built.tokenizer_file, pad_id=meta["pad_id"])
    else:
        made = build_graph(make, request, name, path, facts, layer, layer_index, max_length, precision, strict,
                           expect)
        if made is None:
            return None
        graph, tokenizer, meta = made
    resolve_max_length(max_length, path, facts.max_positions, tokenizer.n_special)  # room for text
    encoder = make(model_name=name, model_path=path, tokenizer=tokenizer,
                   runner=OnnxRunner(graph, request.pooling, precision), layer=layer,
                   num_layers=facts.num_layers, dimension=facts.hidden_size, pooling=request.pooling,
                   max_length=max_length, batch_size=batch_size, fingerprint=meta["fingerprint"],
                   backend_request=request.backend)
    encoder.export_cosine = meta["min_cosine"]
    return encoder


def refuse_changed(name: str, fingerprint: str, expect: str | None) -> None:
    """Stop before exporting or measuring a model that is not the one an index recorded."""
    if expect is not None and fingerprint != expect:
        raise ConfigMismatchError(
            f"model {name} no longer matches the index (weights fingerprint {fingerprint}, recorded {expect}); "
            "re-encode with `semsearch index rebuild`")


def _cannot(message: str, precision: str, strict: bool):
    if strict:
        raise SemsearchError(f"{message}; {precision} needs ONNX Runtime")
    warnings.warn(f"{message}; using the torch backend", stacklevel=4)
    return None


def build_graph(make: Make, request: EncoderConfig, name: str, path: str, facts: ModelFacts, layer: int,
                layer_index: int, max_length: int, precision: str, strict: bool, expect: str | None = None):
    """Export, optimise (and quantise), verify against the fp32 reference and cache a graph.
    Returns ``(graph bytes, tokenizer, meta)``, or None when it cannot reproduce the reference."""
    from . import loading, onnx_export
    from .reference import hidden_state_vectors

    hf_tokenizer, model = loading.load_model(name, path)
    fingerprint = loading.model_fingerprint(model, hf_tokenizer)
    model_cache.remember_fingerprint(path, fingerprint)
    refuse_changed(name, fingerprint, expect)
    key = model_cache.graph_key(fingerprint, layer_index, max_length, precision)
    cached = model_cache.load_graph(key)  # exported before, under a folder signature we did not know
    if cached is not None:
        return str(cached.graph_file), Tokenizer.from_file(cached.tokenizer_file, pad_id=cached.meta["pad_id"]), cached.meta
    log.info("preparing the ONNX Runtime graph of %s (layer %d, %s); this is done once", name, layer, precision)
    tokenizer = Tokenizer.from_transformers(hf_tokenizer)
    texts = policy.PROBE_TEXTS
    reference = {p: hidden_state_vectors(path, texts, layer, p, max_length, model=model, tokenizer=hf_tokenizer)
                 for p in options.POOLINGS}
    loading.drop_unused_layers(model, facts.num_layers, layer_index)

    def verify(graph: bytes) -> float:
        lowest = 1.0
        for pooling, want in reference.items():
            probe = make(model_name=name, model_path=path, tokenizer=tokenizer,
                         runner=OnnxRunner(graph, pooling, precision), layer=layer, num_layers=facts.num_layers,
                         dimension=facts.hidden_size, pooling=pooling, max_length=max_length,
                         batch_size=options.DEFAULT_BATCH_SIZE, fingerprint=fingerprint)
            lowest = min(lowest, float((probe.encode(texts, warn=False) * want).sum(axis=1).min()))
        return lowest

    with tempfile.TemporaryDirectory(prefix="semsearch-export-") as tmp:
        work = Path(tmp)
        onnx_export.export(model, work / "exported.onnx")
        fused = onnx_export.optimize(work / "exported.onnx", work / "model.onnx",
                                     int(model.config.num_attention_heads), facts.hidden_size)
        final, keep = work / "model.onnx", []
        if precision == "int8":
            final = work / "int8.onnx"
            onnx_export.quantize_int8(work / "model.onnx", final, keep)
            cosine = verify(final.read_bytes())
            if cosine < INT8_KEEP_FFN_BELOW:
                keep = onnx_export.matmuls_after(work / "model.onnx", "Gelu")
                onnx_export.quantize_int8(work / "model.onnx", final, keep)
        graph = final.read_bytes()
        cosine = verify(graph)
        needed = policy.MIN_INT8_COSINE if precision == "int8" else policy.MIN_EXPORT_COSINE
        if cosine < needed:
            return _cannot(f"the {precision} ONNX graph of {name} reaches cosine {cosine:.5f} to the fp32 "
                           f"reference on the probe texts, below {needed}", precision, strict)
        tokenizer.save(work / "tokenizer.json")
        meta = {"model": name, "fingerprint": fingerprint, "layer_index": layer_index, "max_length": max_length,
                "precision": precision, "min_cosine": round(cosine, 6), "kept_fp32": keep, "fused": fused,
                **tokenizer.describe(), "export_version": model_cache.EXPORT_VERSION}
        try:
            stored = model_cache.store_graph(key, final, work / "tokenizer.json", meta)
            meta = stored.meta
        except OSError as exc:
            warnings.warn(f"cannot write the model cache ({exc}); the ONNX graph is rebuilt next time", stacklevel=4)
    return graph, tokenizer, meta
