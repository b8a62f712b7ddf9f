"""Whitening of sentence vectors: the fitted transform, its fit, and how it is stored.

Mean-pooled BERT hidden states are anisotropic: they share a large common
component and a few dominant directions, so every cosine is high and the
useful differences are compressed. Whitening (Su et al. 2021) keeps the
method's vectors and adds one linear step: subtract the mean ``mean`` of a
sample of vectors, multiply by ``W = U·diag(1/√λ)`` from the SVD of their
covariance (keeping the first ``k`` columns when asked), L2-normalise.

This module owns ``Whitening`` (apply, serialise, digest) and ``fit`` (the
covariance of the corpus's vectors pooled with a background sample, with a
little shrinkage towards a scaled identity so that a small sample never
makes a singular, noise-amplifying transform). What an index records and
when it refits is ``index.storage.whitened``; whether ``auto`` whitens a
model and layer is ``whitening_policy``.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import numpy as np

MAX_SAMPLE = 20_000  # corpus vectors the fit reads at most (a random sample beyond that)
SHRINKAGE = 0.2  # covariance pulled this far towards tr(Σ)/d · I (chosen by bench/whitening.py: docs/quality.md)


@dataclass(frozen=True, eq=False)
class Whitening:
    """A fitted transform: ``normalise((x - mean) @ matrix)``; ``matrix`` is d × k."""

    mean: np.ndarray
    matrix: np.ndarray

    @property
    def dimension_in(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def dimension(self) -> int:
        """The dimension of the whitened vectors (``k``)."""
        return int(self.matrix.shape[1])

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """Whiten raw vectors (one row or a matrix), rows L2-normalised, float32."""
        x = np.asarray(vectors, dtype=np.float32)
        one = x.ndim == 1
        out = (np.atleast_2d(x) - self.mean) @ self.matrix
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out = (out / np.maximum(norms, 1e-12)).astype(np.float32)
        return out[0] if one else out

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, mean=self.mean.astype(np.float32), matrix=self.matrix.astype(np.float32))
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "Whitening":
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            mean, matrix = arrays["mean"].astype(np.float32), arrays["matrix"].astype(np.float32)
        if mean.ndim != 1 or matrix.ndim != 2 or matrix.shape[0] != mean.shape[0]:
            raise ValueError(f"a whitening transform of shapes {mean.shape} and {matrix.shape}")
        if not (np.isfinite(mean).all() and np.isfinite(matrix).all()):
            raise ValueError("a whitening transform with values that are not finite")
        return cls(mean, matrix)

    def digest(self) -> str:
        """sha256 of the two arrays' float32 bytes (recorded with the transform, checked by ``index check``)."""
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.mean, dtype=np.float32).tobytes())
        h.update(np.ascontiguousarray(self.matrix, dtype=np.float32).tobytes())
        return h.hexdigest()


def fit(vectors: np.ndarray, dims: int | None = None, shrinkage: float = SHRINKAGE,
        weights: np.ndarray | None = None) -> Whitening:
    """The whitening of the rows of ``vectors`` (the corpus sample and the background, pooled),
    keeping the first ``dims`` directions (None: all); ``weights``: how much each row counts (None:
    each once; a row of weight 2 counts as two copies of it)."""
    x = np.asarray(vectors, dtype=np.float64)
    n, d = x.shape
    if n < 2:
        raise ValueError("whitening needs at least two vectors to fit")
    if dims is not None and not 1 <= dims <= d:
        raise ValueError(f"whitening dimensions must be between 1 and {d} (got {dims})")
    if weights is not None:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (n,) or not (np.isfinite(w).all() and (w > 0).all()):
            raise ValueError("whitening weights must be one positive number a vector")
        mean = (w[:, None] * x).sum(axis=0) / w.sum()
        cov = ((w[:, None] * (x - mean)).T @ (x - mean)) / (w.sum() - 1)  # as np.cov of the copies
    else:
        mean = x.mean(axis=0)
        cov = np.cov(x - mean, rowvar=False)
    cov = (1 - shrinkage) * cov + shrinkage * (np.trace(cov) / d) * np.eye(d)
    u, s, _ = np.linalg.svd(cov)
    s = np.maximum(s, s[0] * 1e-9)
    w = u / np.sqrt(s)
    if dims is not None:
        w = w[:, :dims]
    return Whitening(mean.astype(np.float32), w.astype(np.float32))


def sample_rows(n: int, limit: int = MAX_SAMPLE, seed: int = 0) -> np.ndarray | None:
    """Which of ``n`` rows the fit reads: None for all of them, else a sorted random sample of ``limit``."""
    if n <= limit:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))
