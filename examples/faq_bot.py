"""A FAQ bot on semsearch's Python API that knows when it is not sure.

    python examples/faq_bot.py                      # interactive: type questions, Ctrl-D to stop
    echo "I forgot my login secret" | python examples/faq_bot.py

The first time, it indexes examples/faq.jsonl and calibrates on
examples/faq-labelled.jsonl (customer questions with the entry that answers
them, and off-topic ones): it then answers only above the score that kept
its answers right 95% of the time there, and otherwise offers the closest
questions.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from index import SemsearchError
from search import FAQ
from search.faq import read_faq
from search.faq_tuning import calibrate_index, read_labelled

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faq", default=str(HERE / "faq.jsonl"), help="FAQ entries (JSONL: _id, text, metadata.answer)")
    parser.add_argument("--labelled", default=str(HERE / "faq-labelled.jsonl"), help="questions to calibrate on")
    parser.add_argument("--index", default="faq-bot-index", help="index folder (built on first use)")
    args = parser.parse_args()
    try:
        if not (Path(args.index) / "semsearch.db").exists():
            print(f"building {args.index} from {args.faq} and calibrating it ...", file=sys.stderr)
            FAQ.build(args.index, read_faq([args.faq], question_field="text"))
            report = calibrate_index(args.index, read_labelled(args.labelled), target=0.95)
            if report.calibration is None:
                print("warning: 95% precision is out of reach; using the default threshold", file=sys.stderr)
        faq = FAQ(args.index)
        while True:
            if sys.stdin.isatty():
                print("you> ", end="", flush=True)
            line = sys.stdin.readline()
            if not line:
                return 0
            if not line.strip():
                continue
            reply = faq.answer(line.strip())
            if reply:
                print(f"bot> {reply.match.answer}   [{reply.match.question} | score {reply.match.score:.2f}]")
            else:
                print("bot> Sorry, I am not sure. Did you mean: " + "; ".join(m.question for m in reply.runners_up))
    except SemsearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
