"""Loading a transformers model for the torch backend (and for the ONNX export), and its fingerprint.

Owns ``load_model`` (tokenizer + model from a folder or a Hugging Face id, with
transformers' logging silenced and every failure raised as ``ModelLoadError``),
``model_fingerprint`` (recorded by indexes: what determines the vectors, not
where the model lies or which transformers version wrote its config) and
``drop_unused_layers`` (the layers above the pooled one and the pooler are
never computed). What needs no loading is in ``model_files``.
"""

from __future__ import annotations

import hashlib
import json

import torch

from ..errors import ModelLoadError


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


# The configuration fields that shape the vectors (of BERT-like encoders; any other field of the
# config, such as the folder it was loaded from or the transformers version, does not).
ARCHITECTURE_FIELDS = (
    "model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
    "max_position_embeddings", "type_vocab_size", "vocab_size", "layer_norm_eps", "position_embedding_type",
    "pad_token_id", "embedding_size", "num_key_value_heads", "rotary_emb_base", "is_decoder",
)


def model_fingerprint(model, tokenizer) -> str:
    """A short hash of what determines the vectors: the architecture fields of the configuration,
    the vocabulary and tokenizer settings, and the (sampled) weights.

    Every parameter tensor contributes its name, shape and a strided sample of its values, so two
    checkpoints of one architecture differ while the hash stays cheap to compute at load time.
    Computed on the whole loaded model, before any layer is dropped. The folder the model was
    loaded from and the library versions are left out, so an index moves between environments;
    where the hash still differs (an index recorded by an older algorithm, a renamed tensor), the
    index compares re-encoded passages with its stored vectors instead (``Index.encoder_for``).
    """
    h = hashlib.sha256()
    config = model.config
    fields = {name: getattr(config, name) for name in ARCHITECTURE_FIELDS if getattr(config, name, None) is not None}
    h.update(json.dumps(fields, sort_keys=True, default=str).encode())
    vocab = tokenizer.get_vocab()
    h.update(json.dumps(sorted(vocab.items()), ensure_ascii=False).encode())
    h.update(json.dumps(tokenizer_settings(tokenizer), sort_keys=True).encode())
    with torch.no_grad():
        for name, tensor in sorted(model.state_dict().items()):
            flat = tensor.detach().reshape(-1).float()
            step = max(1, flat.numel() // 4096)
            h.update(name.encode())
            h.update(str(tuple(tensor.shape)).encode())
            h.update(flat[::step].contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def tokenizer_settings(tokenizer) -> dict:
    """The settings of a fast tokenizer that change its tokens: lower-casing, accents, Chinese
    characters, special tokens (read from the tokenizer, not from any file's layout)."""
    out = {"special": sorted(str(t) for t in getattr(tokenizer, "all_special_tokens", []))}
    backend = getattr(tokenizer, "backend_tokenizer", None)
    normalizer = getattr(backend, "normalizer", None)
    if normalizer is not None:
        for name in ("lowercase", "strip_accents", "handle_chinese_chars", "clean_text"):
            value = getattr(normalizer, name, None)
            if value is not None:
                out[name] = value
        out["normalizer"] = type(normalizer).__name__
    return out


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
