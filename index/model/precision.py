"""The precision policy: which arithmetic the model runs in, and the accuracy probe's texts.

Owns ``choose_precision`` (``auto`` -> fp16 on CUDA, bf16 on a CPU with bf16
instructions, else fp32; ``int8`` only on the CPU, through ONNX Runtime),
``cpu_supports_bf16``, ``PROBE_TEXTS`` and the thresholds: under ``auto`` a
reduced float precision is kept only when the probe texts' vectors stay
within ``MIN_PROBE_COSINE`` of fp32; int8 is refused below
``MIN_INT8_COSINE``; an exported graph must reach ``MIN_EXPORT_COSINE``.
No torch here: the backends apply the policy.
"""

from __future__ import annotations

from .. import options
from ..errors import SemsearchError

MIN_PROBE_COSINE = 0.999  # bf16/fp16 under auto
MIN_EXPORT_COSINE = 0.9999  # an fp32 ONNX graph against the fp32 reference
MIN_INT8_COSINE = 0.99  # --precision int8 is refused below this
# Varied texts (short, long, Korean, numbers) for the accuracy probes.
PROBE_TEXTS = [
    "How do I reset my password?",
    "The bank raised its interest rates again this quarter.",
    "We sat on the river bank and watched the boats go by.",
    "배를 타고 바다로 갔다.",
    "Mitochondrial dysfunction in 12 of 40 patients (30%) was associated with p < 0.01.",
    " ".join(["A long paragraph about gardening, soil, compost and tomatoes."] * 20),
]


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 matrix instructions (AVX-512 BF16 or AMX)."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def choose_precision(precision: str, device: str) -> str:
    """Resolve ``auto``: fp16 on CUDA, bf16 on a CPU with bf16 instructions, else fp32."""
    if precision not in options.PRECISIONS:
        raise SemsearchError(f"unknown precision {precision!r}; choose one of {', '.join(options.PRECISIONS)}")
    if precision != "auto":
        if precision == "fp16" and device == "cpu":
            raise SemsearchError("fp16 is only supported on a CUDA device; use bf16 or fp32 on the CPU")
        if precision == "int8" and device != "cpu":
            raise SemsearchError("int8 runs on the CPU (ONNX Runtime); use fp16 on a CUDA device")
        return precision
    if device.startswith("cuda"):
        return "fp16"
    return "bf16" if cpu_supports_bf16() else "fp32"
