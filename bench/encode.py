"""Encoding speed: documents per second of semsearch's Encoder against sentence-transformers.

Both sides encode the same texts with the same model folder (the embedded
all-MiniLM-L6-v2), the same max length and the same torch thread count.
sentence-transformers runs ``encode(texts, batch_size=32)`` (its last layer)
in a process of its own, as its users run it (this process's allocator
settings, ``index.model.memory``, do not reach it); semsearch runs its product default (layer -2, mean pooling) in each requested
precision, backend (auto, onnx, torch) and batch size; without ``--precision``
and ``--backend``, every candidate (torch bf16, torch fp32, ONNX fp32, ONNX
int8) and ``auto``, whose rows name the backend and precision it ran for
bulk encoding and for single queries on this machine. When sentence-transformers'
own ONNX backend is installed (``pip install 'sentence-transformers[onnx]'``),
it is a second peer (``SentenceTransformer(folder, backend="onnx")``). Two
workloads from ../shared/data: the first 1,000 SciFact abstracts (long) and
the unique STSb test sentences (short).

Each repetition times sentence-transformers and every semsearch configuration
back to back, the order reversed every other repetition, and the table reports
medians. Accuracy: the minimum cosine between each configuration's vectors and
the slow fp32 reference (``index.model.reference.reference_vectors``, same layer and pooling)
on a sample of at most 200 texts per workload. For int8, the spread that
batching causes (activations are quantised per batch): the lowest cosine
between a text's vector encoded in its batch and alone. It also measures the
CPU's fp32 matrix-multiply rate (2048², the thread count) and reports what
fraction of it each configuration reaches in useful FLOPs. Prints the CPU, a
table and one JSON line.

    python bench/encode.py --quick
    python bench/encode.py
    python bench/encode.py --precision auto int8 --backend auto torch onnx --batch-size 16 32
    python bench/encode.py --backend onnx --precision fp32 int8 --onnx-texts-per-call 16
"""

from __future__ import annotations

import argparse
import atexit
import csv
import json
import platform
import statistics
import subprocess
import sys
import time
import warnings
from importlib.metadata import version
from pathlib import Path
from typing import Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hostinfo import cpu_info, cpu_line  # noqa: E402  (bench/ is on sys.path as the script's folder)

from index.errors import SemsearchError  # noqa: E402
from index.model.encoder import Encoder  # noqa: E402
from index.model.onnx_runner import OnnxRunner  # noqa: E402
from index.model.precision import choose_precision  # noqa: E402
from index.model.reference import reference_vectors  # noqa: E402
from index.options import BACKENDS, DEFAULT_BATCH_SIZE, PRECISIONS  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
SCIFACT = Path("scifact") / "corpus.jsonl"
STSB = Path("stsb_en") / "stsb-en-test.csv"
SAMPLE = 200  # texts checked against the slow fp32 reference, per workload
WARMUP = 8  # texts encoded once per side before timing
CANDIDATES = (("auto", "auto"), ("bf16", "torch"), ("fp32", "torch"), ("fp32", "onnx"), ("int8", "onnx"))


def load_abstracts(path: Path, limit: int) -> list[str]:
    texts = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if len(texts) >= limit:
                break
            doc = json.loads(line)
            texts.append(f"{doc['title']} {doc['text']}" if doc.get("title") else doc["text"])
    return texts


def load_sentences(path: Path, limit: int | None) -> list[str]:
    unique: dict[str, None] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.reader(f):
            unique.setdefault(row[0])
            unique.setdefault(row[1])
    return list(unique)[:limit]


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def matmul_gflops(threads: int, n: int = 2048, repeats: int = 10, dtype: torch.dtype = torch.float32) -> float:
    """The matrix-multiply rate (fp32 unless ``dtype``) of this CPU at ``threads`` threads (the
    bound for long texts)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def useful_gflop(encoder: Encoder, texts: list[str]) -> float:
    """FLOPs of the encoder's layers on ``texts`` (linear layers and attention, as truncated)."""
    d = encoder.dimension
    ff = 4 * d  # BERT's intermediate size
    layers = encoder.layer_index
    total = 0.0
    for ids in encoder.tokenizer.ids(texts):
        t = min(len(ids), encoder.window) + encoder.n_special
        total += layers * (2 * t * (4 * d * d + 2 * d * ff) + 4 * t * t * d)
    return total / 1e9


ST_CHILD = r"""
import json, sys
import torch
from sentence_transformers import SentenceTransformer
folder, device, max_length, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
model = SentenceTransformer(folder, device=device)
model.max_seq_length = max_length
print("ready", flush=True)
for line in sys.stdin:
    model.encode(json.loads(line), batch_size=32, show_progress_bar=False)
    print("done", flush=True)
"""


def st_process(folder: str, device: str, max_length: int, threads: int) -> Callable[[list[str]], None]:
    """sentence-transformers in a process of its own, as a user runs it: this process's settings
    (semsearch's malloc thresholds, ``index.model.memory``) do not reach it. Returns a function
    that has it encode some texts and waits for it (the pipe costs milliseconds of seconds)."""
    child = subprocess.Popen([sys.executable, "-c", ST_CHILD, folder, device, str(max_length), str(threads)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    atexit.register(child.kill)
    if child.stdout.readline().strip() != "ready":
        raise SystemExit("sentence-transformers could not load the model in its process")

    def encode(texts: list[str]) -> None:
        child.stdin.write(json.dumps(texts) + "\n")
        child.stdin.flush()
        if child.stdout.readline().strip() != "done":
            raise SystemExit("sentence-transformers failed in its process")

    return encode


def st_onnx_peer(folder: str, max_length: int):
    """sentence-transformers with its own ONNX backend, exported from the same folder; None if not installed."""
    try:
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(folder, backend="onnx", device="cpu")
    except Exception as exc:  # the extra is missing, or its versions clash with this environment
        print(f"note: sentence-transformers' ONNX backend is not available here ({type(exc).__name__}: "
              f"{str(exc).splitlines()[0][:120] if str(exc) else ''}); it is left out", file=sys.stderr)
        return None
    model.max_seq_length = max_length
    return lambda texts: model.encode(texts, batch_size=32, show_progress_bar=False)


def batch_spread(encoder: Encoder, texts: list[str]) -> float:
    """Lowest cosine between each text's vector encoded with the others and alone."""
    together = encoder.encode(texts, warn=False)
    alone = np.stack([encoder.encode([t], warn=False)[0] for t in texts])
    return float((together * alone).sum(axis=1).min())


def auto_runs(configs: dict[str, Encoder]) -> dict[str, str]:
    """What --precision auto --backend auto runs on this machine for bulk encoding and for queries."""
    enc = next((e for name, e in configs.items() if name.startswith("semsearch auto auto")), None)
    if enc is None:
        enc = Encoder.load(layer=-2, pooling="mean", precision="auto", backend="auto")
    return {"auto_bulk": f"{enc.backend} {enc.precision}", "auto_query": f"{enc.query_backend} {enc.query_precision}"}


def timed(fn: Callable[[list[str]], np.ndarray], texts: list[str]) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    vectors = fn(texts)
    return len(texts) / (time.perf_counter() - start), vectors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", nargs="+", default=None, choices=PRECISIONS,
                        help="default: every candidate and auto (with --backend: auto)")
    parser.add_argument("--backend", nargs="+", default=None, choices=BACKENDS,
                        help="default: every candidate and auto (with --precision: auto)")
    parser.add_argument("--batch-size", type=int, nargs="+", default=[DEFAULT_BATCH_SIZE])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=None, help="default 3 (--quick: 2)")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--quick", action="store_true", help="200 abstracts, 500 sentences, 2 repeats")
    parser.add_argument("--onnx-texts-per-call", type=int, default=None,
                        help="long texts an ONNX Runtime call takes at most (default: its runner's, "
                             f"{OnnxRunner.batch_texts}); to measure that cap on another CPU")
    args = parser.parse_args()
    if args.onnx_texts_per_call is not None:
        if args.onnx_texts_per_call < 1:
            parser.error("--onnx-texts-per-call must be at least 1")
        OnnxRunner.batch_texts = args.onnx_texts_per_call
    if not (args.data / SCIFACT).is_file() or not (args.data / STSB).is_file():
        print(f"skipped: SciFact or STSb data not found under {args.data}", file=sys.stderr)
        return 0
    repeats = args.repeats or (2 if args.quick else 3)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=r".*longer than \d+ tokens were truncated")
    workloads = {
        "scifact": load_abstracts(args.data / SCIFACT, 200 if args.quick else 1000),
        "stsb": load_sentences(args.data / STSB, 500 if args.quick else None),
    }
    configs: dict[str, Encoder] = {}
    if args.precision is None and args.backend is None:
        pairs = list(CANDIDATES)
    else:
        pairs = [(p, k) for p in args.precision or ["auto"] for k in args.backend or ["auto"]]
    for p, k in pairs:
        for b in args.batch_size:
            try:
                configs[f"semsearch {p} {k} b{b}"] = Encoder.load(
                    layer=-2, pooling="mean", precision=p, batch_size=b, device=args.device, backend=k)
            except SemsearchError as exc:  # e.g. int8 on the torch backend
                print(f"note: precision {p} with backend {k} left out: {exc}", file=sys.stderr)
    first = next(iter(configs.values()))
    reference = Encoder.load(layer=-2, pooling="mean", precision="fp32", device=args.device)
    st_encode = st_process(first.model_path, first.device, first.max_length, torch.get_num_threads())
    sides: dict[str, Callable[[list[str]], np.ndarray | None]] = {"sentence-transformers": st_encode}
    st_onnx = st_onnx_peer(first.model_path, first.max_length) if first.device == "cpu" else None
    if st_onnx is not None:
        sides["sentence-transformers onnx"] = st_onnx
    sides.update({name: enc.encode for name, enc in configs.items()})
    peak = matmul_gflops(torch.get_num_threads())

    results: dict[str, dict] = {}
    for workload, texts in workloads.items():
        for fn in sides.values():  # warm-up, not timed
            fn(texts[:WARMUP])
        runs: dict[str, list[float]] = {name: [] for name in sides}
        vectors: dict[str, np.ndarray] = {}
        for rep in range(repeats):
            order = list(sides) if rep % 2 == 0 else list(reversed(sides))
            for name in order:
                rate, vectors[name] = timed(sides[name], texts)
                runs[name].append(rate)
        step = max(1, len(texts) // SAMPLE)
        sample = list(range(0, len(texts), step))[:SAMPLE]
        ref = reference_vectors(reference, [texts[i] for i in sample])
        st_rate = statistics.median(runs["sentence-transformers"])
        gflop = useful_gflop(first, texts)
        rows: dict[str, dict] = {}
        for name, rates in runs.items():
            rate = statistics.median(rates)
            row = {"docs_per_s": round(rate, 2), "ratio_vs_st": round(rate / st_rate, 3),
                   "min_cosine": None, "runs": [round(r, 2) for r in rates]}
            if "sentence-transformers onnx" in runs:
                row["ratio_vs_st_onnx"] = round(rate / statistics.median(runs["sentence-transformers onnx"]), 3)
            if name in configs:
                enc = configs[name]
                cos = (vectors[name][sample] * ref).sum(axis=1)
                cap = enc.runner_for(len(texts), bulk=True).batch_texts
                row.update(precision=enc.precision, backend=enc.backend, batch_size=enc.batch_size,
                           long_texts_per_call=enc.long_texts_per_call(cap),
                           query_backend=enc.query_backend, query_precision=enc.query_precision,
                           min_cosine=round(float(cos.min()), 6),
                           peak_fraction=round(gflop * rate / len(texts) / peak, 3))
                if enc.precision == "int8":
                    row["batch_spread_min_cosine"] = round(batch_spread(enc, [texts[i] for i in sample[:64]]), 6)
            rows[name] = row
        results[workload] = {"docs": len(texts), "cosine_sample": len(sample), "sides": rows}

    info = {
        **cpu_info(),
        "device": device_name(first.device), "device_kind": first.device, "torch": torch.__version__,
        "threads": torch.get_num_threads(), "auto_precision": choose_precision("auto", first.device),
        **auto_runs(configs),
        "model": first.model_name, "max_length": first.max_length, "layer": first.layer,
        "pooling": first.pooling, "repeats": repeats, "quick": args.quick,
        "matmul_gflops": round(peak, 1), "sentence_transformers": version("sentence-transformers"),
        "transformers": version("transformers"), "onnxruntime": version("onnxruntime"),
    }
    print(f"cpu: {cpu_line(info)}")
    print(f"device: {info['device']} ({info['device_kind']}), torch {info['torch']}, "
          f"{info['threads']} threads, auto -> bulk {info['auto_bulk']}, queries {info['auto_query']}, max length {info['max_length']}, "
          f"{repeats} repeats (medians); fp32 matmul {peak:.0f} GFLOP/s; sentence-transformers "
          f"{info['sentence_transformers']}, transformers {info['transformers']}, onnxruntime {info['onnxruntime']}")
    print(f"{'workload':<9} {'docs':>5} {'config':<64} {'docs/s':>9} {'vs ST':>7} {'min cos':>9} {'of peak':>8}")
    for workload, res in results.items():
        for name, row in res["sides"].items():
            label = name if "precision" not in row else f"{name} ({row['backend']} {row['precision']})"
            if "precision" in row and (row["query_backend"], row["query_precision"]) != (row["backend"], row["precision"]):
                label = f"{name} (bulk {row['backend']} {row['precision']}, query {row['query_backend']} {row['query_precision']})"
            if "precision" in row and row["long_texts_per_call"] != row["batch_size"]:
                label = f"{label[:-1]}, {row['long_texts_per_call']} a call)"
            cos = "-" if row["min_cosine"] is None else f"{row['min_cosine']:.5f}"
            share = f"{row['peak_fraction']:.0%}" if "peak_fraction" in row else "-"
            print(f"{workload:<9} {res['docs']:>5} {label:<64} {row['docs_per_s']:>9.1f} "
                  f"{row['ratio_vs_st']:>6.2f}x {cos:>9} {share:>8}")
            if "batch_spread_min_cosine" in row:
                print(f"{'':<16}int8 vector in its batch against alone: lowest cosine {row['batch_spread_min_cosine']:.5f}")
    print(json.dumps({"benchmark": "encode", **info, "workloads": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
