"""Pooling: token vectors of one hidden layer -> one L2-normalised sentence vector.

Owns ``pool`` (torch tensors) and ``pool_numpy`` (numpy arrays, for the ONNX
Runtime path, which never imports torch): masked mean, max or [CLS]; the
choices are ``options.POOLINGS``.
"""

from __future__ import annotations

import numpy as np


def pool(hidden, mask, pooling: str):
    """Pool torch token vectors ``(batch, tokens, dim)`` over real tokens and L2-normalise."""
    import torch

    m = mask.to(hidden.dtype).unsqueeze(-1)
    if pooling == "mean":
        v = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)
    elif pooling == "max":
        v = hidden.masked_fill(m == 0, float("-inf")).max(dim=1).values
    elif pooling == "cls":
        v = hidden[:, 0]
    else:  # pragma: no cover - validated when the encoder is made
        raise ValueError(pooling)
    return torch.nn.functional.normalize(v, p=2, dim=-1)


def pool_numpy(hidden: np.ndarray, mask: np.ndarray, pooling: str) -> np.ndarray:
    """``pool`` on numpy arrays; returns float32 ``(batch, dim)``."""
    hidden = hidden.astype(np.float32, copy=False)
    m = mask.astype(np.float32)[:, :, None]
    if pooling == "mean":
        v = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1.0)
    elif pooling == "max":
        v = np.where(m > 0, hidden, -np.inf).max(axis=1)
    elif pooling == "cls":
        v = hidden[:, 0]
    else:  # pragma: no cover - validated when the encoder is made
        raise ValueError(pooling)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return (v / np.maximum(norms, 1e-12)).astype(np.float32)
