"""A tiny FAQ bot on semsearch's Python API.

    python examples/faq_bot.py                      # interactive: type questions, Ctrl-D to stop
    echo "I forgot my login secret" | python examples/faq_bot.py

It builds an index from examples/faq.jsonl the first time (the answers are in
each entry's metadata), then answers with the best FAQ entry when it is
confident and offers the closest questions when it is not.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from index import Index, SemsearchError
from index.sources import read_documents
from search import FAQ

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faq", default=str(HERE / "faq.jsonl"), help="FAQ entries (JSONL with metadata.answer)")
    parser.add_argument("--index", default="faq-bot-index", help="index folder (built on first use)")
    parser.add_argument("--threshold", type=float, default=None, help="minimum score for a confident answer")
    args = parser.parse_args()
    try:
        if not (Path(args.index) / "semsearch.db").exists():
            print(f"building {args.index} from {args.faq} ...", file=sys.stderr)
            Index.build(args.index, read_documents([args.faq]))
        faq = FAQ(args.index) if args.threshold is None else FAQ(args.index, threshold=args.threshold)
        interactive = sys.stdin.isatty()
        while True:
            if interactive:
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
                closest = "; ".join(m.question for m in reply.runners_up)
                print(f"bot> Sorry, I am not sure. Did you mean: {closest}")
    except SemsearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
