"""Loading a transformers model for the encoder, and what is read off the loaded model.

Owns ``load_model`` (tokenizer + model from a folder or a Hugging Face id, with
transformers' logging silenced and every failure raised as ``ModelLoadError``),
``model_fingerprint`` (recorded by indexes: its algorithm must not change),
the tokenizer facts (``special_tokens``, ``decomposes_hangul``), the checks of
the requested layer and max length, and ``drop_unused_layers`` (the layers
above the pooled one and the pooler are never computed).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from . import options
from .errors import ModelLoadError, SemsearchError
from .text import is_jamo_piece


def load_model(model_name: str, model_path: str):
    """``(tokenizer, model)`` from ``model_path``, the model in eval mode; ``model_name`` names
    it in errors. The tokenizer must be a fast one (passages need its character offsets)."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        model = AutoModel.from_pretrained(model_path)
    except Exception as exc:  # transformers raises many kinds (OSError, ValueError, HTTP errors)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"cannot load model {model_name!r}: {first}") from exc
    if not getattr(tokenizer, "is_fast", False):
        raise ModelLoadError(
            f"model {model_name!r} has no fast tokenizer; semsearch needs one for passage offsets"
        )
    model.eval()
    return tokenizer, model


def model_fingerprint(model, tokenizer) -> str:
    """A short hash of the model's configuration, vocabulary and (sampled) weights.

    Every parameter tensor contributes its name, shape and a strided sample of
    its values, so two checkpoints of one architecture differ while the hash
    stays cheap to compute at load time. Computed on the whole loaded model,
    before any layer is dropped.
    """
    h = hashlib.sha256()
    h.update(model.config.to_json_string(use_diff=False).encode())
    vocab = tokenizer.get_vocab()
    h.update(json.dumps(sorted(vocab.items()), ensure_ascii=False).encode())
    with torch.no_grad():
        for name, tensor in sorted(model.state_dict().items()):
            flat = tensor.detach().reshape(-1).float()
            step = max(1, flat.numel() // 4096)
            h.update(name.encode())
            h.update(str(tuple(tensor.shape)).encode())
            h.update(flat[::step].contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def special_tokens(tokenizer) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after a single text (for BERT: [CLS] and [SEP])."""
    content = tokenizer("x", add_special_tokens=False)["input_ids"]
    full = tokenizer("x", add_special_tokens=True)["input_ids"]
    for i in range(len(full) - len(content) + 1):
        if full[i : i + len(content)] == content:
            return list(full[:i]), list(full[i + len(content) :])
    raise ModelLoadError("cannot work out the tokenizer's special tokens")


def decomposes_hangul(tokenizer) -> bool:
    """True when the tokenizer turns the syllable 배 into jamo pieces (the NFD accent-strip trap)."""
    return any(is_jamo_piece(tok) for tok in tokenizer.tokenize("배"))


def check_layer(layer: int, num_layers: int) -> int:
    """``layer`` when it indexes ``hidden_states`` (embeddings + one entry per layer), else an error."""
    n = num_layers + 1
    if not -n <= layer < n:
        raise SemsearchError(
            f"layer {layer} is out of range for this model: it has {num_layers} layers, "
            f"so choose from {-n} to {n - 1}"
        )
    return layer


def resolve_max_length(requested: int | None, model_path: str, model_config, n_special: int) -> int:
    """Tokens per model input: ``requested``, else the folder's sentence_bert_config.json
    ``max_seq_length``, else ``options.DEFAULT_MAX_LENGTH``; at most the model's
    ``max_position_embeddings`` and more than the ``n_special`` special tokens."""
    limit = int(getattr(model_config, "max_position_embeddings", 512) or 512)
    if requested is None:
        requested = options.DEFAULT_MAX_LENGTH
        st_config = Path(model_path) / "sentence_bert_config.json"
        if st_config.is_file():
            try:
                requested = int(json.loads(st_config.read_text())["max_seq_length"])
            except (ValueError, KeyError, TypeError):
                pass
    if requested <= n_special:
        raise SemsearchError(f"max length {requested} leaves no room for text")
    return min(int(requested), limit)


def drop_unused_layers(model, num_layers: int, layer_index: int) -> bool:
    """Drop the transformer layers above ``layer_index`` (0 = embeddings) and the unused pooler.

    Returns True when the layers were dropped, so that the model's last hidden
    state is the pooled layer; False for a module layout this does not know.
    """
    truncated = False
    layers = getattr(getattr(model, "encoder", None), "layer", None)
    if isinstance(layers, torch.nn.ModuleList) and len(layers) == num_layers:
        model.encoder.layer = layers[:layer_index]
        truncated = True
    if hasattr(model, "pooler"):
        model.pooler = None
    return truncated
