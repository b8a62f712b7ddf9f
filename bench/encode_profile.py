"""Where torch bf16 spends its time on long texts: a torch.profiler breakdown of encoding SciFact abstracts.

Encodes the first SciFact abstracts with semsearch's torch backend in bf16 (the
bulk path of ``--backend auto`` on a bf16 CPU) under ``torch.profiler`` and
groups the operators' self CPU time: matrix multiplies (the linear layers),
attention (SDPA and its parts), layer norms, GELU, softmax, dtype conversions
and copies, embeddings, pooling and the rest; then tokenisation (timed on its
own, outside the model) and padding (padded tokens against real ones, in the
batches the encoder forms). Also the useful bf16 matmul rate against a 2048²
bf16 matmul on the same threads. Prints the CPU, a table and one JSON line.

    python bench/encode_profile.py --quick
    python bench/encode_profile.py --docs 300
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from encode import load_abstracts, matmul_gflops  # noqa: E402  (the same loader and peak as bench/encode.py)
from hostinfo import cpu_info, cpu_line  # noqa: E402

from index.model.encoder import Encoder  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
SCIFACT = Path("scifact") / "corpus.jsonl"
GROUPS = (  # first match wins: (group, substrings of the operator name)
    ("matmul (linear)", ("addmm", "aten::mm", "aten::bmm", "aten::linear", "matmul", "mkldnn")),
    ("attention (sdpa)", ("scaled_dot_product", "flash_attention", "_efficient_attention", "attention")),
    ("layer norm", ("layer_norm",)),
    ("gelu", ("gelu",)),
    ("softmax", ("softmax",)),
    ("dtype conversion and copies", ("aten::to", "_to_copy", "copy_", "contiguous", "clone")),
    ("embeddings", ("embedding", "index_select")),
    ("add and other elementwise", ("aten::add", "aten::mul", "aten::div", "aten::sub", "aten::where")),
    ("pooling", ("aten::sum", "aten::mean", "aten::norm", "linalg", "clamp")),
)


def group_of(name: str) -> str:
    for group, keys in GROUPS:
        if any(k in name for k in keys):
            return group
    return "other"


def padding_share(encoder: Encoder, texts: list[str]) -> tuple[int, int]:
    """(real tokens, padded tokens) in the batches the encoder forms for ``texts``."""
    ids = [i[: encoder.window] for i in encoder.tokenizer.ids(texts)]
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    real = padded = 0
    for batch in encoder.batches(order, ids):
        width = max(len(ids[i]) for i in batch) + encoder.n_special
        if len(batch) > 1 and width > 32:
            width = min(encoder.max_length, -(-width // 16) * 16)
        real += sum(len(ids[i]) + encoder.n_special for i in batch)
        padded += width * len(batch)
    return real, padded


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=200, help="SciFact abstracts profiled (--quick: 32)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--quick", action="store_true", help="32 abstracts")
    args = parser.parse_args()
    if not (args.data / SCIFACT).is_file():
        print(f"skipped: SciFact data not found under {args.data}", file=sys.stderr)
        return 0
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=r".*longer than \d+ tokens were truncated")
    texts = load_abstracts(args.data / SCIFACT, 32 if args.quick else args.docs)
    encoder = Encoder.load(layer=-2, pooling="mean", precision="bf16", backend="torch")
    encoder.encode(texts[:8], warn=False)  # warm-up

    started = time.perf_counter()
    for _ in range(3):
        encoder.tokenizer.ids(texts)
    tokenize_s = (time.perf_counter() - started) / 3
    started = time.perf_counter()
    encoder.encode(texts, warn=False)
    total_s = time.perf_counter() - started

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        encoder.encode(texts, warn=False)
    by_group: dict[str, float] = defaultdict(float)
    top: list[tuple[str, float]] = []
    for event in prof.key_averages():
        by_group[group_of(event.key)] += event.self_cpu_time_total / 1e6
        top.append((event.key, event.self_cpu_time_total / 1e6))
    profiled = sum(by_group.values())
    top.sort(key=lambda kv: -kv[1])
    real, padded = padding_share(encoder, texts)
    d, layers = encoder.dimension, encoder.layer_index
    flop = sum(layers * (2 * t * 12 * d * d + 4 * t * t * d)
               for t in (min(len(i), encoder.window) + encoder.n_special for i in encoder.tokenizer.ids(texts)))
    peak = matmul_gflops(torch.get_num_threads(), dtype=torch.bfloat16)
    useful = flop / total_s / 1e9

    info = {**cpu_info(), "torch": torch.__version__, "threads": torch.get_num_threads(), "docs": len(texts),
            "precision": encoder.precision, "backend": encoder.backend, "lean": encoder.lean}
    print(f"cpu: {cpu_line(info)}")
    print(f"torch {info['torch']}, {info['threads']} threads, {len(texts)} SciFact abstracts, bulk encoding on "
          f"{encoder.backend} {encoder.precision} (lean pass: {encoder.lean}); queries are not profiled here")
    print(f"encode {total_s:.2f} s ({len(texts) / total_s:.1f} docs/s), {useful:.0f} GFLOP/s useful against "
          f"{peak:.0f} GFLOP/s for a 2048² bf16 matmul ({useful / peak:.0%}); tokenisation {tokenize_s:.3f} s "
          f"({tokenize_s / total_s:.1%} of encoding); padding {padded - real} of {padded} tokens "
          f"({(padded - real) / padded:.1%})")
    print(f"{'operator group':<30} {'self CPU s':>10} {'share':>7}")
    for group, seconds in sorted(by_group.items(), key=lambda kv: -kv[1]):
        print(f"{group:<30} {seconds:>10.3f} {seconds / profiled:>7.1%}")
    print("top operators: " + ", ".join(f"{k} {v / profiled:.1%}" for k, v in top[:8]))
    print(json.dumps({"benchmark": "profile", **info, "encode_s": round(total_s, 3),
                      "tokenize_s": round(tokenize_s, 4), "real_tokens": real, "padded_tokens": padded,
                      "useful_gflops": round(useful, 1), "bf16_matmul_gflops": round(peak, 1),
                      "groups": {g: round(s / profiled, 4) for g, s in by_group.items()},
                      "top": [[k, round(v / profiled, 4)] for k, v in top[:12]],
                      "vector_check": float(np.isfinite(encoder.encode(texts[:2], warn=False)).all())}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
