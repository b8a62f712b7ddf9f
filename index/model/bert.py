"""The lean BERT forward pass: transformers' BertModel arithmetic without its per-call machinery.

Owns ``lean_hidden`` (the last kept hidden layer, computed with the model's own
weights and SDPA), ``lean_hidden_states`` (every layer up to a given one, for
token vectors) and the test of whether an encoder may use it:
``choose_lean`` accepts only a plain BERT encoder (``eligible``) whose probe
vectors with the lean pass agree within ``TOLERANCE`` with transformers' own
forward. The encoder calls it as ``bert.lean_hidden`` so that a test can
replace it.
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import torch

TOLERANCE = 1e-5  # largest absolute difference from the library's vectors on the probe texts
# Up to this many tokens, reduced-precision attention runs in fp32: for short texts SDPA's cost is
# its per-(text, head) overhead, and its bf16 kernel took 2.8 ms on a batch of 127 texts of 11
# tokens where casting to fp32 and back took 2.2 ms (Intel Xeon with AMX; at 256 tokens bf16 is
# twice as fast as fp32, so long batches keep it).
SHORT_ATTENTION = 32

log = logging.getLogger(__name__)


def eligible(model_config, truncated: bool) -> bool:
    """True for a plain BERT encoder (absolute positions, not a decoder) whose layers above the
    pooled one were dropped, so that the last kept layer is the pooled one."""
    return (
        truncated and getattr(model_config, "model_type", "") == "bert"
        and getattr(model_config, "position_embedding_type", "absolute") == "absolute"
        and not getattr(model_config, "is_decoder", False)
    )


def choose_lean(model_config, truncated: bool, probe_vectors: Callable[[bool], np.ndarray]) -> bool:
    """True when the lean pass may replace transformers' forward: the model is ``eligible`` and
    ``probe_vectors(True)`` (lean) agrees with ``probe_vectors(False)`` (the library's forward)."""
    if not eligible(model_config, truncated):
        return False
    try:
        library = probe_vectors(False)
        lean = probe_vectors(True)
    except Exception as exc:  # an unexpected module layout: keep the library's forward
        log.info("lean forward unavailable: %s", exc)
        return False
    if float(np.abs(library - lean).max()) > TOLERANCE:
        log.info("lean forward disagrees with transformers; not used")
        return False
    return True


def lean_hidden(model, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """BERT's encoder written out with the model's own weights and SDPA.

    The same arithmetic as transformers' BertModel in eval mode, without
    its per-call machinery (kwargs validation, output capture, mask
    builders), which costs more than the arithmetic for a short query.
    Returns the output of the last layer left in ``model.encoder.layer``.
    """
    hidden = _embeddings(model, input_ids)
    attend = mask.bool()[:, None, None, :]
    for layer in model.encoder.layer:
        hidden = _layer(layer, hidden, attend)
    return hidden


def lean_hidden_states(model, input_ids: torch.Tensor, mask: torch.Tensor, upto: int) -> list[torch.Tensor]:
    """The embeddings and the outputs of the first ``upto`` layers (``hidden_states[:upto + 1]``
    of transformers' forward), computing no layer above ``upto``."""
    hidden = _embeddings(model, input_ids)
    attend = mask.bool()[:, None, None, :]
    states = [hidden]
    for layer in model.encoder.layer[:upto]:
        hidden = _layer(layer, hidden, attend)
        states.append(hidden)
    return states


def _embeddings(model, input_ids: torch.Tensor) -> torch.Tensor:
    return model.embeddings(input_ids=input_ids, token_type_ids=torch.zeros_like(input_ids))


def _layer(layer, hidden: torch.Tensor, attend: torch.Tensor) -> torch.Tensor:
    """One BertLayer: self-attention (SDPA), then the feed-forward block, each with its residual
    and LayerNorm."""
    att = layer.attention.self
    b, t, _ = hidden.shape
    shape = (b, t, -1, att.attention_head_size)
    q = att.query(hidden).view(shape).transpose(1, 2)
    k = att.key(hidden).view(shape).transpose(1, 2)
    v = att.value(hidden).view(shape).transpose(1, 2)
    if q.dtype != torch.float32 and t <= SHORT_ATTENTION:
        ctx = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float(),
                                                               attn_mask=attend).to(q.dtype)
    else:
        ctx = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=attend)
    ctx = ctx.transpose(1, 2).reshape(b, t, -1)
    out = layer.attention.output
    hidden = out.LayerNorm(out.dense(ctx) + hidden)
    inner = layer.intermediate.intermediate_act_fn(layer.intermediate.dense(hidden))
    return layer.output.LayerNorm(layer.output.dense(inner) + hidden)
