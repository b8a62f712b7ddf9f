"""STS benchmark: Spearman correlation between cosine similarity and the gold score.

Measures how well each layer/pooling choice orders sentence pairs by meaning,
on ../shared/data/stsb_en (STS Benchmark test, 1,379 pairs). Prints a table and
one JSON line.

    python bench/sts.py                 # layer -2 and layer -1, mean pooling, embedded model
    python bench/sts.py --layers -2 -1 --poolings mean cls --model PATH
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hostinfo import cpu_info, cpu_line, encoder_runs, runs_line  # noqa: E402  (bench/ is on sys.path as the script's folder)

from index.model.encoder import Encoder  # noqa: E402
from search.evaluation import spearman  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "stsb_en" / "stsb-en-test.csv"


def load_pairs(path: Path, limit: int | None) -> tuple[list[str], list[str], list[float]]:
    a, b, gold = [], [], []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.reader(f):
            a.append(row[0])
            b.append(row[1])
            gold.append(float(row[2]))
    return a[:limit], b[:limit], gold[:limit]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model id or folder (default: embedded all-MiniLM-L6-v2)")
    parser.add_argument("--layers", type=int, nargs="+", default=[-2, -1])
    parser.add_argument("--poolings", nargs="+", default=["mean"])
    parser.add_argument("--precision", default=None, help="fp32, bf16 or auto (default: auto)")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--quick", action="store_true", help="first 200 pairs only")
    args = parser.parse_args()
    if not args.data.is_file():
        print(f"skipped: STS data not found at {args.data}", file=sys.stderr)
        return 0
    a, b, gold = load_pairs(args.data, 200 if args.quick else None)
    rows = []
    for layer in args.layers:
        for pooling in args.poolings:
            enc = Encoder.load(args.model, layer=layer, pooling=pooling, precision=args.precision)
            va, vb = enc.encode(a), enc.encode(b)
            rows.append({"layer": layer, "pooling": pooling, "precision": enc.precision, "pairs": len(gold),
                         "spearman": round(spearman((va * vb).sum(axis=1), gold), 4)})
    print(f"machine: {cpu_line()}; {runs_line(enc)}")
    print(f"{'layer':>6} {'pooling':>8} {'pairs':>6} {'Spearman':>9}")
    for r in rows:
        print(f"{r['layer']:>6} {r['pooling']:>8} {r['pairs']:>6} {r['spearman']:>9.4f}")
    print(json.dumps({"benchmark": "sts", **cpu_info(), **encoder_runs(enc), "model": enc.model_name, "results": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
