"""FAQ bot calibration, measured: does the calibrated bot answer what it should and abstain otherwise?

StackFAQ (../shared/data/stackfaq): its 125 FAQ questions are indexed with
their answers (`semsearch faq build`), and its 1,250 user rewordings are
split at random (fixed seed) into a calibration half and a test half; STSb
test sentences are the off-topic questions, split the same way. For each
layer, `faq calibrate` chooses the threshold and margin on the calibration
half (target precision 0.95; where the index whitens, once with its fit as
built and once refitted with the calibration half's question texts, the
default), and the test half measures what the bot then
does: the share of in-domain questions it answers, the precision of its
answers (a wrong entry, or any answer to an off-topic question, is a
mistake) and the share of off-topic questions it answers. The uncalibrated
default threshold (0.70, or 0.40 where the index whitens) is shown for comparison. Prints the CPU, a table
and one JSON line.

    python bench/faq.py
    python bench/faq.py --off-topic 600 --target 0.95 --seed 0
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hostinfo import cpu_info, cpu_line  # noqa: E402  (bench/ is on sys.path as the script's folder)

from index import Index  # noqa: E402
from search.beir import load_qrels, load_queries  # noqa: E402
from search.calibration import Observation, rates  # noqa: E402
from search.faq import FAQ, default_threshold, faq_documents, read_faq  # noqa: E402
from search.faq_tuning import LabelledQuestion, calibrate_index, observe_faq  # noqa: E402

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--off-topic", type=int, default=1200, help="STSb sentences in all (half per side)")
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--layers", type=int, nargs="+", default=[-2, -1])
    parser.add_argument("--quick", action="store_true",
                        help="300 rewordings and 200 off-topic sentences, layer -2 only (a smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.off_topic, args.layers = 200, [-2]
    stackfaq, stsb = args.data / "stackfaq", args.data / "stsb_en" / "stsb-en-test.csv"
    if not stackfaq.is_dir() or not stsb.is_file():
        print(f"skipped: StackFAQ or STSb not found under {args.data}", file=sys.stderr)
        return 0
    warnings.simplefilter("ignore")
    qrels = load_qrels(stackfaq / "qrels" / "test.tsv")
    labelled = [LabelledQuestion(q.text, next(iter(qrels[q.id]))) for q in load_queries(stackfaq / "queries.jsonl")
                if q.id in qrels and q.text.strip()]
    random.Random(args.seed).shuffle(labelled)
    if args.quick:
        labelled = labelled[:300]
    off = [LabelledQuestion(s, None) for s in off_topic_sentences(stsb, args.off_topic, args.seed)]
    half, off_half = len(labelled) // 2, len(off) // 2
    calibration, test = labelled[:half] + off[:off_half], labelled[half:] + off[off_half:]
    rows = []
    with tempfile.TemporaryDirectory(prefix="semsearch-bench-faq-") as tmp:
        path = Path(tmp) / "faq"
        entries = read_faq([str(stackfaq / "corpus.jsonl")], question_field="text", answer_field="answers")
        Index.build(path, faq_documents(entries))
        recorded = Index.open(path).info()
        for layer in args.layers:
            if int(Index.open(path).config["layer"]) != layer:
                Index.open(path).rebuild(layer=layer)
            faq = FAQ(path)
            if layer == -2:
                default = default_threshold(Index.open(path).config)
                rows.append({"layer": layer, "setting": f"default {default}", **measure(faq, test, default, 0.0)})
            whitens = bool((Index.open(path).config.get("whitening_fit") or {}).get("whiten"))
            for fit_questions in ((False, True) if whitens else (False,)):
                report = calibrate_index(path, calibration, args.target, fit_questions=fit_questions)
                chosen = report.calibration or None
                setting = report.top if chosen is None else chosen
                label = "calibrated" if chosen else "most precise (target not reached)"
                if whitens:
                    label += " (questions in the fit: default)" if fit_questions else " (--no-fit-questions)"
                rows.append({"layer": layer, "setting": label, "calibration_precision": round(setting.precision, 4),
                             "fitted_questions": report.fitted_questions,
                             **measure(FAQ(path), test, setting.threshold, setting.margin)})
    info = {**cpu_info(), "seed": args.seed, "target": args.target, "in_domain_test": len(labelled) - half,
            "off_topic_test": len(off) - off_half, "bulk": recorded.bulk, "query": recorded.query}
    print(f"machine: {cpu_line(info)}; bulk {recorded.bulk}, queries {recorded.query}")
    print(f"StackFAQ: calibrated on {half} rewordings + {off_half} STSb sentences, tested on the other "
          f"{info['in_domain_test']} + {info['off_topic_test']} (seed {args.seed}, target precision {args.target})")
    print(f"{'layer':>5}  {'setting':<52} {'threshold':>9} {'margin':>6} {'answered':>9} {'precision':>9} {'off-topic':>9}")
    for r in rows:
        print(f"{r['layer']:>5}  {r['setting']:<52} {r['threshold']:>9.4f} {r['margin']:>6.2f} {r['answered']:>9.1%} "
              f"{r['precision']:>9.1%} {r['off_topic_answered']:>9.1%}")
    print(json.dumps({"benchmark": "faq", **info, "results": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
