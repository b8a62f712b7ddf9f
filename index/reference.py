"""Verification: the slow fp32 reference that the encoder's fast path must reproduce.

The reference reloads the encoder's model in full (no dropped layers, fp32,
transformers' own forward with ``output_hidden_states=True``) and encodes one
text at a time, so there is no padding, no batching, no lean pass and no
reduced precision: the same layer and pooling, truncated to the encoder's
``max_length``. Used by ``semsearch index check`` and ``bench/encode.py``.

    from index.reference import reference_min_cosine
    assert reference_min_cosine(encoder) >= 0.999
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from .pooling import pool
from .precision import PROBE_TEXTS
from .text import normalize_text

if TYPE_CHECKING:  # pragma: no cover
    from .encoder import Encoder


def reference_vectors(encoder: "Encoder", texts: Sequence[str]) -> np.ndarray:
    """fp32 vectors ``(len(texts), dimension)`` of ``texts`` from a fresh full copy of
    ``encoder``'s model, one text at a time. Slow: meant for a sample."""
    from transformers import AutoModel

    if not texts:
        return np.empty((0, encoder.dimension), dtype=np.float32)
    full = AutoModel.from_pretrained(encoder.model_path).eval()
    rows = []
    with torch.inference_mode():
        for text in texts:
            enc = encoder.tokenizer(
                normalize_text(text), truncation=True, max_length=encoder.max_length,
                return_tensors="pt",
            )
            hidden = full(**enc, output_hidden_states=True).hidden_states[encoder.layer]
            rows.append(pool(hidden.float(), enc["attention_mask"], encoder.pooling)[0].numpy())
    return np.stack(rows).astype(np.float32)


def reference_min_cosine(encoder: "Encoder", texts: Sequence[str] = PROBE_TEXTS) -> float:
    """The lowest cosine between ``encoder.encode(texts)`` and the reference vectors:
    1.0 means the fast path reproduces the reference. ``texts`` must not be empty;
    encoding warnings (truncation, Hangul) are not raised here."""
    if not texts:
        raise ValueError("reference_min_cosine needs at least one text")
    fast = encoder.encode(texts, warn=False)
    return float((fast * reference_vectors(encoder, texts)).sum(axis=1).min())
