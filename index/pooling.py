"""Pooling: token vectors of one hidden layer -> one L2-normalised sentence vector.

Owns ``pool`` (masked mean, max or [CLS]); the choices are ``options.POOLINGS``.
"""

from __future__ import annotations

import torch


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Pool token vectors ``(batch, tokens, dim)`` over real tokens and L2-normalise."""
    m = mask.to(hidden.dtype).unsqueeze(-1)
    if pooling == "mean":
        v = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)
    elif pooling == "max":
        v = hidden.masked_fill(m == 0, float("-inf")).max(dim=1).values
    elif pooling == "cls":
        v = hidden[:, 0]
    else:  # pragma: no cover - validated in the Encoder constructor
        raise ValueError(pooling)
    return torch.nn.functional.normalize(v, p=2, dim=-1)
