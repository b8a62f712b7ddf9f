"""Keeping freed memory for reuse while PyTorch encodes: glibc's ``mallopt``, once per process.

glibc's malloc hands every block over its mmap threshold (32 MiB at most by
default) to a fresh ``mmap`` and returns it to the system when it is freed.
PyTorch's activations for a batch of long texts are such blocks (a 64 x 256
x 1536 bf16 tensor is 48 MiB), so every layer of every batch touched new
pages: about 470,000 minor page faults for 400 SciFact abstracts. With the
mmap and trim thresholds raised to ``THRESHOLD`` the freed blocks stay in the
heap and the next batch reuses them: torch bf16 went from 136-142 to
161-177 abstracts a second, with a few thousand faults (one-off measurement,
idle Intel Xeon family 6 model 167, 2 threads; ``bench/encode.py`` times the
result against sentence-transformers). The cost is that a process keeps up
to ``THRESHOLD`` of freed memory for reuse instead of giving it back.

Only on Linux with glibc (elsewhere nothing happens), only once per process,
and not when ``SEMSEARCH_MALLOC=system`` asks to leave malloc as it is.
"""

from __future__ import annotations

import ctypes
import os
import sys

THRESHOLD = 256 << 20  # bytes: blocks up to this come from the heap, and this much freed heap is kept
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
ENV = "SEMSEARCH_MALLOC"

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds to ``THRESHOLD`` (once); True when they are raised."""
    global _applied
    if _applied is None:
        _applied = _raise_thresholds()
    return _applied


def _raise_thresholds() -> bool:
    if not sys.platform.startswith("linux") or os.environ.get(ENV, "").strip().lower() == "system":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, THRESHOLD))
