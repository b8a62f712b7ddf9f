"""The precision policy: which float type the model runs in, and the accuracy probe.

Owns ``choose_precision`` (``auto`` -> fp16 on CUDA, bf16 on a CPU with bf16
instructions, else fp32), ``cpu_supports_bf16``, the torch dtype of each
precision (``DTYPES``), and ``probe_reduced_precision``: under ``auto`` a
reduced precision is kept only when the vectors of ``PROBE_TEXTS`` stay within
``MIN_PROBE_COSINE`` of fp32. The choices are ``options.PRECISIONS``.
"""

from __future__ import annotations

import logging
from typing import Callable, Sequence

import numpy as np
import torch

from . import options
from .errors import SemsearchError

MIN_PROBE_COSINE = 0.999
# Varied texts (short, long, Korean, numbers) for the reduced-precision accuracy probe.
PROBE_TEXTS = [
    "How do I reset my password?",
    "The bank raised its interest rates again this quarter.",
    "We sat on the river bank and watched the boats go by.",
    "배를 타고 바다로 갔다.",
    "Mitochondrial dysfunction in 12 of 40 patients (30%) was associated with p < 0.01.",
    " ".join(["A long paragraph about gardening, soil, compost and tomatoes."] * 20),
]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

log = logging.getLogger(__name__)


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 matrix instructions (AVX-512 BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def choose_precision(precision: str, device: str) -> str:
    """Resolve ``auto``: fp16 on CUDA, bf16 on a CPU with bf16 instructions, else fp32."""
    if precision not in options.PRECISIONS:
        raise SemsearchError(f"unknown precision {precision!r}; choose one of {', '.join(options.PRECISIONS)}")
    if precision != "auto":
        if precision == "fp16" and device == "cpu":
            raise SemsearchError("fp16 is only supported on a CUDA device; use bf16 or fp32 on the CPU")
        return precision
    if device.startswith("cuda"):
        return "fp16"
    return "bf16" if cpu_supports_bf16() else "fp32"


def probe_reduced_precision(
    model: torch.nn.Module,
    encode: Callable[[Sequence[str]], np.ndarray],
    precision: str,
) -> tuple[str, float]:
    """Cast an fp32 ``model`` to ``precision`` if that reproduces its fp32 vectors.

    ``encode`` turns texts into vectors with ``model`` as it is at the time of
    the call. Returns ``(precision in use, lowest cosine to fp32 on PROBE_TEXTS)``;
    the model is cast back to fp32 when that cosine is below ``MIN_PROBE_COSINE``.
    """
    reference = encode(PROBE_TEXTS)
    model.to(dtype=DTYPES[precision])
    reduced = encode(PROBE_TEXTS)
    cosine = float((reference * reduced).sum(axis=1).min())
    if cosine < MIN_PROBE_COSINE:
        log.info("keeping fp32: %s vectors reached cosine %.5f only", precision, cosine)
        model.to(dtype=torch.float32)
        return "fp32", cosine
    return precision, cosine
