"""The machine a benchmark ran on: CPU model, the vector-instruction flags that decide speed, threads.

Speed on this project differs 2-4x between a CPU with AVX-512 BF16 (bf16 matrix
instructions) and one with AVX2 only, so every benchmark prints this line and
puts it in its JSON, with what the encoder ran for bulk encoding and for
queries (``runs_line``, ``encoder_runs``).
"""

from __future__ import annotations

import os
import platform

FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def cpu_info() -> dict:
    model, flags, family = platform.processor() or "unknown", set(), {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name") and model in ("unknown", platform.processor()):
                    model = line.split(":", 1)[1].strip()
                elif line.split(":")[0].strip() in ("cpu family", "model") and line.split(":")[0].strip() not in family:
                    family[line.split(":")[0].strip()] = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    if family:  # "AMD EPYC" alone does not tell Zen 1 from Zen 4
        model = f"{model} (family {family.get('cpu family', '?')}, model {family.get('model', '?')})"
    return {"cpu": model, "cpu_flags": [f for f in FLAGS if f in flags], "cpus": os.cpu_count()}


def cpu_line(info: dict | None = None) -> str:
    info = info or cpu_info()
    return f"{info['cpu']}, {info['cpus']} CPUs, flags: {' '.join(info['cpu_flags']) or 'none of ' + '/'.join(FLAGS)}"


def encoder_runs(encoder) -> dict:
    """What an encoder runs for bulk encoding and for single queries (``--backend auto`` may differ)."""
    return {"bulk": f"{encoder.backend} {encoder.precision}",
            "query": f"{getattr(encoder, 'query_backend', encoder.backend)} "
                     f"{getattr(encoder, 'query_precision', encoder.precision)}"}


def runs_line(encoder) -> str:
    r = encoder_runs(encoder)
    return f"bulk {r['bulk']}, queries {r['query']}"


if __name__ == "__main__":
    print(cpu_line())
