"""BERT built from its weight file alone, for the lean pass: the torch backend without transformers.

Importing transformers and instantiating its BertModel costs a bulk job about
two seconds before its first batch (``docs/speed.md``: importing
``modeling_bert`` alone takes most of it), which matters for a `semsearch
embed` or an `index add` of a few thousand sentences. The lean pass
(``bert.lean_hidden``) needs only the weights, under the attribute names of
transformers' modules, so ``load`` builds that module tree with plain
``torch.nn`` layers from ``model.safetensors`` and ``config.json``.

It is used only for a model folder that transformers has already loaded once
in this environment and whose direct build was then shown to give the
library's vectors (``verify``, remembered by ``model_cache.remember_direct``
with the folder's file signature and the transformers version, like the
fingerprint): any other model, changed file or unknown layout goes through
transformers as before.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np
import torch
from torch import nn

from . import bert

WEIGHTS = "model.safetensors"
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "gelu": nn.GELU,  # transformers' "gelu" is the exact erf form
    "gelu_new": lambda: nn.GELU(approximate="tanh"),
    "gelu_pytorch_tanh": lambda: nn.GELU(approximate="tanh"),
    "relu": nn.ReLU,
}
PREFIXES = ("", "bert.")  # BertModel checkpoints, and BertFor* ones whose encoder is under "bert."

log = logging.getLogger(__name__)


class Linear(nn.Linear):
    def reset_parameters(self) -> None:  # no random initialisation: every weight is read from the file
        pass


class Embedding(nn.Embedding):
    def reset_parameters(self) -> None:
        pass


class LayerNorm(nn.LayerNorm):
    def reset_parameters(self) -> None:
        pass


class Embeddings(nn.Module):
    """transformers' BertEmbeddings in eval mode with absolute positions."""

    def __init__(self, c: SimpleNamespace):
        super().__init__()
        self.word_embeddings = Embedding(c.vocab_size, c.hidden_size)
        self.position_embeddings = Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)[None, :]
        hidden = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        return self.LayerNorm(hidden + self.position_embeddings(positions))


class DenseNorm(nn.Module):
    """A projection whose output is added to the residual and layer-normalised (by the caller)."""

    def __init__(self, inputs: int, c: SimpleNamespace):
        super().__init__()
        self.dense = Linear(inputs, c.hidden_size)
        self.LayerNorm = LayerNorm(c.hidden_size, eps=c.layer_norm_eps)


class Layer(nn.Module):
    """One BertLayer's weights under transformers' names (``bert._layer`` does the arithmetic)."""

    def __init__(self, c: SimpleNamespace):
        super().__init__()
        heads = c.num_attention_heads
        self.attention = nn.Module()
        self.attention.self = nn.Module()
        for name in ("query", "key", "value"):
            setattr(self.attention.self, name, Linear(c.hidden_size, c.hidden_size))
        self.attention.self.attention_head_size = c.hidden_size // heads
        self.attention.output = DenseNorm(c.hidden_size, c)
        self.intermediate = nn.Module()
        self.intermediate.dense = Linear(c.hidden_size, c.intermediate_size)
        self.intermediate.intermediate_act_fn = ACTIVATIONS[c.hidden_act]()
        self.output = DenseNorm(c.intermediate_size, c)


class DirectBert(nn.Module):
    """``embeddings`` and ``encoder.layer``: what ``bert.lean_hidden`` reads; ``config`` as the
    fields the runner and the lean pass ask for."""

    def __init__(self, c: SimpleNamespace):
        super().__init__()
        self.config = c
        self.embeddings = Embeddings(c)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(Layer(c) for _ in range(c.num_hidden_layers))


def read_config(model_path: str) -> SimpleNamespace | None:
    """The configuration of a plain BERT encoder this module can build, else None."""
    try:
        raw = json.loads((Path(model_path) / "config.json").read_text(encoding="utf-8"))
        c = SimpleNamespace(
            model_type=raw.get("model_type"), vocab_size=int(raw["vocab_size"]), hidden_size=int(raw["hidden_size"]),
            num_hidden_layers=int(raw["num_hidden_layers"]), num_attention_heads=int(raw["num_attention_heads"]),
            intermediate_size=int(raw["intermediate_size"]), hidden_act=raw.get("hidden_act", "gelu"),
            max_position_embeddings=int(raw.get("max_position_embeddings") or 512),
            type_vocab_size=int(raw.get("type_vocab_size") or 2), layer_norm_eps=float(raw.get("layer_norm_eps", 1e-12)),
            position_embedding_type=raw.get("position_embedding_type") or "absolute",
            is_decoder=bool(raw.get("is_decoder", False)))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    plain = (c.model_type == "bert" and c.position_embedding_type == "absolute" and not c.is_decoder
             and c.hidden_act in ACTIVATIONS and c.hidden_size % c.num_attention_heads == 0)
    return c if plain else None


def possible(model_path: str) -> bool:
    """Whether ``load`` may build this folder's model: a plain BERT encoder with ``model.safetensors``."""
    return read_config(model_path) is not None and (Path(model_path) / WEIGHTS).is_file()


def load(model_path: str) -> DirectBert | None:
    """The model of ``model_path`` from ``model.safetensors`` (fp32, eval mode), or None when the
    folder has no such file, is not a plain BERT encoder, or its tensors do not fit the layout."""
    config, weights = read_config(model_path), Path(model_path) / WEIGHTS
    if config is None or not weights.is_file():
        return None
    from safetensors.torch import load_file  # transformers' own dependency; light to import

    try:
        tensors = load_file(str(weights))
    except Exception as exc:  # a damaged or foreign file: transformers reports it properly
        log.info("direct load of %s failed: %s", weights, exc)
        return None
    model = DirectBert(config)
    wanted = model.state_dict()
    for prefix in PREFIXES:
        found = {name: tensors.get(prefix + legacy(name)) if prefix + name not in tensors else tensors[prefix + name]
                 for name in wanted}
        if all(t is not None and tuple(t.shape) == tuple(wanted[n].shape) for n, t in found.items()):
            model.load_state_dict({n: t.float() for n, t in found.items()})
            return model.eval()
    log.info("direct load of %s: the tensors do not match a BertModel layout", weights)
    return None


def legacy(name: str) -> str:
    """A LayerNorm parameter under the TensorFlow-era names some checkpoints keep (gamma, beta)."""
    if ".LayerNorm." in name:
        return name.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
    return name


def verify(model_path: str, library_vectors: np.ndarray, vectors_of: Callable[[object], np.ndarray]) -> bool:
    """True when the directly built model gives the library's probe vectors: ``vectors_of(model)``
    encodes the probe texts with it (fp32, the same layers dropped), ``library_vectors`` are
    transformers' own."""
    model = load(model_path)
    if model is None:
        return False
    direct = vectors_of(model)
    gap = float(np.abs(direct - library_vectors).max())
    if gap > bert.TOLERANCE:
        log.info("direct BERT differs from transformers by %.2g; not used", gap)
        return False
    return True
