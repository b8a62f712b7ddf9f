"""Verification: the slow fp32 reference that every fast path must reproduce.

The reference loads the model in full with transformers (its own tokenizer,
no dropped layers, fp32, ``output_hidden_states=True``) and encodes one text
at a time, so there is no padding, no batching, no lean pass, no exported
graph and no reduced precision: the same layer and pooling, truncated to the
same max length. Used to verify an ONNX export before it is cached, by
``semsearch index check`` and by ``bench/encode.py``.

    from index.model.reference import reference_min_cosine
    assert reference_min_cosine(encoder) >= 0.999
"""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np

from .precision import PROBE_TEXTS
from .text import normalize_text


class ReferencedEncoder(Protocol):
    """What the reference needs of an encoder (``encoder.Encoder`` is one): where its model lies,
    what it pools, and its own (fast) vectors."""

    model_path: str
    layer: int
    pooling: str
    max_length: int
    keep_hangul: bool
    dimension: int

    def encode(self, texts: Sequence[str], warn: bool = True) -> np.ndarray: ...


def hidden_state_vectors(model_path: str, texts: Sequence[str], layer: int, pooling: str, max_length: int,
                         model=None, tokenizer=None, keep_hangul: bool = False) -> np.ndarray:
    """fp32 vectors ``(len(texts), dimension)`` of ``texts`` from the full model at ``model_path``
    (or the given full fp32 ``model`` and transformers ``tokenizer``), one text at a time.
    ``keep_hangul`` applies ``hangul.apply`` to a tokenizer loaded here, as the encoder does."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from .pooling import pool

    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        if keep_hangul:
            from .hangul import apply

            apply(tokenizer.backend_tokenizer, True, model_path)
    full = model if model is not None else AutoModel.from_pretrained(model_path).eval()
    rows = []
    with torch.inference_mode():
        for text in texts:
            enc = tokenizer(normalize_text(text), truncation=True, max_length=max_length, return_tensors="pt")
            hidden = full(**enc, output_hidden_states=True).hidden_states[layer]
            rows.append(pool(hidden.float(), enc["attention_mask"], pooling)[0].numpy())
    return np.stack(rows).astype(np.float32)


def reference_vectors(encoder: ReferencedEncoder, texts: Sequence[str]) -> np.ndarray:
    """The reference vectors of ``texts`` for ``encoder``'s model, layer, pooling and max length."""
    if not texts:
        return np.empty((0, encoder.dimension), dtype=np.float32)
    return hidden_state_vectors(encoder.model_path, texts, encoder.layer, encoder.pooling, encoder.max_length,
                                keep_hangul=encoder.keep_hangul)


def reference_min_cosine(encoder: ReferencedEncoder, texts: Sequence[str] = PROBE_TEXTS) -> float:
    """The lowest cosine between ``encoder.encode(texts)`` and the reference vectors:
    1.0 means the fast path reproduces the reference. ``texts`` must not be empty;
    encoding warnings (truncation, Hangul) are not raised here."""
    if not texts:
        raise ValueError("reference_min_cosine needs at least one text")
    fast = encoder.encode(texts, warn=False)
    return float((fast * reference_vectors(encoder, texts)).sum(axis=1).min())
