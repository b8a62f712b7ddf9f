"""Vectors as JSON arrays of numbers rounded to 7 decimals, written by numpy rather than per number.

``semsearch embed`` prints one JSON array per text. Formatting each number
with ``json.dumps`` (Python's float repr) took 0.26 s for 2,552 vectors of
384 numbers, a sixth of what encoding them took in bf16; ``json_arrays``
writes the digits of the whole matrix at once. The numbers are the same as
``json.dumps(np.round(v.astype(np.float64), 7).tolist())`` gives when read
back (``tests/test_vector_json.py``); only the spelling differs: every
number has 7 decimals (``0.1200000``, ``0.0000123`` where repr writes
``1.23e-05``) and a space where a positive one has no minus. Values of 10 or more
in magnitude, and non-finite ones, take that slow path.
"""

from __future__ import annotations

import json

import numpy as np

DECIMALS = 7
_SCALE = 10**DECIMALS
WIDTH = DECIMALS + 4
_ZERO, _POINT, _MINUS, _COMMA, _SPACE = (ord(c) for c in "0.-, ")


def json_arrays(matrix: np.ndarray) -> list[str]:
    """One JSON array per row of ``matrix`` (2-d), each number rounded to ``DECIMALS`` decimals."""
    rows = np.asarray(matrix, dtype=np.float64)
    if rows.ndim != 2:
        raise ValueError(f"expected a 2-d matrix, got shape {rows.shape}")
    if rows.size == 0:
        return ["[]"] * rows.shape[0]
    if not np.isfinite(rows).all() or np.abs(rows).max() >= 9.99999995:
        return [json.dumps(r) for r in np.round(rows, DECIMALS).tolist()]
    scaled = np.rint(rows * _SCALE).astype(np.int64)  # what np.round(rows, 7) computes before dividing
    magnitude = np.abs(scaled).astype(np.int32)
    n, d = scaled.shape
    # Every number as 11 bytes: a minus or a space, the units digit, the point, 7 decimals and a
    # comma, so that the rows are slices of one buffer (JSON allows the space; trailing zeros stay).
    chars = np.empty((n, d, WIDTH), dtype=np.uint8)
    chars[..., 0] = np.where(scaled < 0, _MINUS, _SPACE)
    rest = magnitude % _SCALE
    for j in range(DECIMALS, 0, -1):
        chars[..., 2 + j] = _ZERO + rest % 10
        rest //= 10
    chars[..., 1] = _ZERO + magnitude // _SCALE
    chars[..., 2] = _POINT
    chars[..., WIDTH - 1] = _COMMA
    body = chars.tobytes().decode("ascii")
    row = d * WIDTH
    return [f"[{body[i * row : (i + 1) * row - 1]}]" for i in range(n)]
