"""Does ``--backend auto`` choose the same path in every Python environment of one machine?

Issue 20's target: the default speed must not depend on which virtual
environment a user happens to run. This script makes ``--envs`` fresh
virtual environments (``python -m venv --system-site-packages``: the
installed torch, onnxruntime, transformers and semsearch, as ``pip install
-e .`` put it, are shared, nothing is downloaded; each runs the command with
its own interpreter), each with its own empty choice cache
(``SEMSEARCH_CACHE``).
In each it runs a first ``semsearch embed`` (the first use: ``auto`` chooses
and caches its bulk and query paths, as a new user's first command does) and
then ``semsearch doctor --json`` (a fresh measurement of every candidate,
and the cached choice). It prints each environment's cached and measured
choice and whether they are all the same, the CPU, and one JSON line. Exit
status 1 when two environments chose differently.

    python bench/environments.py                 # 2 environments in a temporary folder
    python bench/environments.py --envs 3 --rounds 5
    python bench/environments.py --quick         # 2 environments, 1 doctor round
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hostinfo import cpu_info, cpu_line  # noqa: E402  (bench/ is on sys.path as the script's folder)


def make_environment(folder: Path) -> Path:
    """A fresh virtual environment that sees the packages installed for this interpreter (semsearch
    included, as ``pip install -e .`` put it there); returns its ``python``."""
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(folder)], check=True)
    return folder / "bin" / "python"


def semsearch(python: Path, *args: str) -> list[str]:
    """The ``semsearch`` command run by the environment's own interpreter."""
    return [str(python), "-c", "from cli import cli; cli()", *args]


def choices_in(python: Path, cache: Path, rounds: int) -> dict:
    """The first use's cached choice and a fresh doctor measurement, in the environment of ``python``."""
    env = {**os.environ, "SEMSEARCH_CACHE": str(cache)}
    env.pop("PYTHONPATH", None)
    started = time.perf_counter()
    subprocess.run(semsearch(python, "embed", "the first use of this environment"),
                   check=True, env=env, stdout=subprocess.DEVNULL, cwd=cache)
    first_use = time.perf_counter() - started
    doctor = subprocess.run(semsearch(python, "doctor", "--json", "--rounds", str(rounds)),
                            check=True, env=env, capture_output=True, text=True, cwd=cache)
    found = json.loads(doctor.stdout)
    return {"python": str(python), "first_use_s": round(first_use, 2), "cached": found["cached"],
            "measured": {"bulk": found["bulk"], "query": found["query"]},
            "speeds": found["speeds"], "bulk_reason": found["bulk_reason"], "query_reason": found["query_reason"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", type=int, default=2, help="fresh virtual environments (at least 2)")
    parser.add_argument("--rounds", type=int, default=3, help="semsearch doctor's interleaved timing rounds")
    parser.add_argument("--workdir", type=Path, default=None, help="where the environments go (default: a temp folder)")
    parser.add_argument("--quick", action="store_true", help="2 environments, 1 doctor round")
    args = parser.parse_args()
    if args.quick:
        args.envs, args.rounds = 2, 1
    if args.envs < 2:
        parser.error("--envs must be at least 2")
    info = cpu_info()
    print(f"machine: {cpu_line(info)}")
    with tempfile.TemporaryDirectory(prefix="semsearch-bench-envs-", dir=args.workdir) as tmp:
        results = []
        for i in range(args.envs):
            cache = Path(tmp) / f"cache-{i}"
            cache.mkdir()
            results.append(choices_in(make_environment(Path(tmp) / f"env-{i}"), cache, args.rounds))
            r = results[-1]
            print(f"environment {i}: first use cached bulk {r['cached']['bulk']}, query {r['cached']['query']}; "
                  f"doctor measured bulk {r['measured']['bulk']}, query {r['measured']['query']} "
                  f"(first use {r['first_use_s']} s)")
            for s in r["speeds"]:
                print(f"    {s['name']:<12} long {s['long_texts_per_s']} texts/s, short {s['short_texts_per_s']} "
                      f"texts/s, query {s['query_ms']} ms")
    chosen = {json.dumps(r["cached"], sort_keys=True) for r in results}
    measured = {json.dumps(r["measured"], sort_keys=True) for r in results}
    same = len(chosen) == 1 and len(measured) == 1 and chosen == measured
    print(f"{'the same choice in every environment' if same else 'DIFFERENT choices'}: "
          f"{sorted(chosen)} (cached), {sorted(measured)} (measured now)")
    print(json.dumps({"benchmark": "environments", **info, "rounds": args.rounds, "same": same,
                      "environments": results}))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
