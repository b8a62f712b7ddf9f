"""FAQ bot calibration, measured: does the calibrated bot answer what it should and abstain otherwise?

StackFAQ (../shared/data/stackfaq): its 125 FAQ questions are indexed with
their answers (`semsearch faq build`), and its 1,249 non-empty user
rewordings are split at random into a calibration half and a test half; STSb
test sentences are the off-topic questions, split the same way. For each
layer and split, `faq calibrate` chooses the threshold, margin and answer
weight on the calibration half (target precision 0.95), each way: questions
alone (`--no-weigh-answers`) or answers weighed too (the default), and, where
the index whitens, with its fit as built (`--no-fit-questions`) or refitted
with the calibration half's question texts (the default; the calibration then
scores each question with a fit that left its fold out). The test half
measures what the bot then does: the share of in-domain questions it
answers, the precision of its answers (a wrong entry, or any answer to an
off-topic question, is a mistake) and the share of off-topic questions it
answers. The uncalibrated default threshold (0.70, or 0.40 where the index
whitens) is shown for comparison. One split's precision moves by about a
point from split to split, so `--splits` random splits (seeds `--seed`,
`--seed + 1`, ...) are measured and summarised: mean, lowest, and how many
splits met issue 17's target (>= 75% answered at precision >= the target).
Prints the CPU, a table per split, the summary and one JSON line.

    python bench/faq.py
    python bench/faq.py --layers -2 --splits 10 --off-topic 1200 --target 0.95
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hostinfo import cpu_info, cpu_line  # noqa: E402  (bench/ is on sys.path as the script's folder)

from index import Index  # noqa: E402
from search.beir import load_qrels, load_queries  # noqa: E402
from search.calibration import SETTING, Observation, rates  # noqa: E402
from search.faq import FAQ, default_threshold, faq_documents, read_faq  # noqa: E402
from search.faq_tuning import LabelledQuestion, calibrate_index, fit_questions_into, observe_faq  # noqa: E402

DATA = ROOT.parent / "shared" / "data"


def off_topic_sentences(path: Path, n: int, seed: int) -> list[str]:
    unique: dict[str, None] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.reader(f):
            for sentence in row[:2]:
                unique.setdefault(sentence.strip())
    sentences = [s for s in unique if s]
    random.Random(seed).shuffle(sentences)
    return sentences[:n]


def measure(faq: FAQ, test: list[LabelledQuestion], threshold: float, margin: float) -> dict:
    observations: list[Observation] = observe_faq(faq, test)
    r = rates(observations, threshold, margin)
    return {"threshold": round(threshold, 4), "margin": margin, "answered": round(r.answered, 4),
            "precision": round(r.precision, 4), "off_topic_answered": round(r.off_topic_answered or 0.0, 4)}


def split(labelled: list[LabelledQuestion], stsb: Path, off_topic: int, seed: int):
    """``(calibration half, test half)`` of the rewordings and the off-topic sentences, shuffled by ``seed``."""
    shuffled = list(labelled)
    random.Random(seed).shuffle(shuffled)
    off = [LabelledQuestion(s, None) for s in off_topic_sentences(stsb, off_topic, seed)]
    half, off_half = len(shuffled) // 2, len(off) // 2
    return shuffled[:half] + off[:off_half], shuffled[half:] + off[off_half:]


def measure_layer(path: Path, layer: int, calibration: list[LabelledQuestion], test: list[LabelledQuestion],
                  target: float, seed: int) -> list[dict]:
    """The rows of one layer and split: the default threshold, then each calibration way."""
    rows = []
    fit_questions_into(Index.open(path), [])  # no earlier split's questions in the fit
    if layer == -2:
        default = default_threshold(Index.open(path).config)
        Index.open(path).set_setting(SETTING, None)
        rows.append({"layer": layer, "seed": seed, "setting": f"default {default}",
                     **measure(FAQ(path), test, default, 0.0)})
    whitens = bool((Index.open(path).config.get("whitening_fit") or {}).get("whiten"))
    ways = [(fit, weigh) for fit in ((False, True) if whitens else (False,)) for weigh in (False, True)]
    for fit_questions, weigh_answers in ways:
        report = calibrate_index(path, calibration, target, fit_questions=fit_questions, weigh_answers=weigh_answers)
        chosen = report.calibration or None
        setting = report.top if chosen is None else chosen
        label = "calibrated" if chosen else "most precise (target not reached)"
        label += ", answers weighed" if weigh_answers else ", questions alone"
        if whitens:
            label += ", questions in the fit" if fit_questions else ""
        rows.append({"layer": layer, "seed": seed, "setting": label,
                     "calibration_precision": round(setting.precision, 4),
                     "answer_weight": chosen.answer_weight if chosen else 0.0,
                     "fitted_questions": report.fitted_questions,
                     **measure(FAQ(path), test, setting.threshold, setting.margin)})
    return rows


def summarise(rows: list[dict], target: float) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["layer"], r["setting"]), []).append(r)
    out = []
    for (layer, setting), rs in groups.items():
        answered, precision = [r["answered"] for r in rs], [r["precision"] for r in rs]
        out.append({"layer": layer, "setting": setting, "splits": len(rs),
                    "answered_mean": statistics.mean(answered), "answered_min": min(answered),
                    "precision_mean": statistics.mean(precision), "precision_min": min(precision),
                    "off_topic_mean": statistics.mean(r["off_topic_answered"] for r in rs),
                    "both": sum(1 for r in rs if r["answered"] >= 0.75 and r["precision"] >= target)})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--off-topic", type=int, default=1200, help="STSb sentences in all (half per side)")
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=0, help="the first split's seed")
    parser.add_argument("--splits", type=int, default=5,
                        help="random calibration/test splits (seeds --seed, --seed + 1, ...; --quick: 1)")
    parser.add_argument("--layers", type=int, nargs="+", default=[-2, -1])
    parser.add_argument("--quick", action="store_true",
                        help="300 rewordings and 200 off-topic sentences, layer -2 only (a smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.off_topic, args.layers, args.splits = 200, [-2], 1
    stackfaq, stsb = args.data / "stackfaq", args.data / "stsb_en" / "stsb-en-test.csv"
    if not stackfaq.is_dir() or not stsb.is_file():
        print(f"skipped: StackFAQ or STSb not found under {args.data}", file=sys.stderr)
        return 0
    warnings.simplefilter("ignore")
    qrels = load_qrels(stackfaq / "qrels" / "test.tsv")
    labelled = [LabelledQuestion(q.text, next(iter(qrels[q.id]))) for q in load_queries(stackfaq / "queries.jsonl")
                if q.id in qrels and q.text.strip()]
    if args.quick:
        labelled = labelled[:300]
    rows = []
    with tempfile.TemporaryDirectory(prefix="semsearch-bench-faq-") as tmp:
        path = Path(tmp) / "faq"
        entries = read_faq([str(stackfaq / "corpus.jsonl")], question_field="text", answer_field="answers")
        Index.build(path, faq_documents(entries))
        recorded = Index.open(path).info()
        for layer in args.layers:
            if int(Index.open(path).config["layer"]) != layer:
                Index.open(path).rebuild(layer=layer)
            for seed in range(args.seed, args.seed + args.splits):
                calibration, test = split(labelled, stsb, args.off_topic, seed)
                rows += measure_layer(path, layer, calibration, test, args.target, seed)
    half, off_half = len(labelled) // 2, args.off_topic // 2
    info = {**cpu_info(), "seeds": list(range(args.seed, args.seed + args.splits)), "target": args.target,
            "in_domain_test": len(labelled) - half, "off_topic_test": args.off_topic - off_half,
            "bulk": recorded.bulk, "query": recorded.query}
    print(f"machine: {cpu_line(info)}; bulk {recorded.bulk}, queries {recorded.query}")
    print(f"StackFAQ: calibrated on {half} rewordings + {off_half} STSb sentences, tested on the other "
          f"{info['in_domain_test']} + {info['off_topic_test']}, target precision {args.target}; seeds {info['seeds']}")
    print(f"{'layer':>5} {'seed':>4}  {'setting':<62} {'weight':>6} {'threshold':>9} {'margin':>6} {'answered':>9} "
          f"{'precision':>9} {'off-topic':>9}")
    for r in rows:
        print(f"{r['layer']:>5} {r['seed']:>4}  {r['setting']:<62} {r.get('answer_weight', 0.0):>6g} {r['threshold']:>9.4f} "
              f"{r['margin']:>6.2f} {r['answered']:>9.1%} {r['precision']:>9.1%} {r['off_topic_answered']:>9.1%}")
    summary = summarise(rows, args.target)
    print(f"over the {args.splits} split(s): mean (lowest) of each setting; 'both': splits with >= 75% answered "
          f"at precision >= {args.target}")
    for r in summary:
        print(f"{r['layer']:>5}  {r['setting']:<62} answered {r['answered_mean']:.1%} ({r['answered_min']:.1%}), "
              f"precision {r['precision_mean']:.1%} ({r['precision_min']:.1%}), off-topic {r['off_topic_mean']:.2%}, "
              f"both {r['both']}/{r['splits']}")
    print(json.dumps({"benchmark": "faq", **info, "results": rows, "summary": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
