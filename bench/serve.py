"""The HTTP service under load: requests per second and latency with micro-batching on and off.

An index of the StackFAQ questions (../shared/data/stackfaq) is served by
`semsearch serve` on a free 127.0.0.1 port, twice: with micro-batching
(default: a question waits up to 10 ms for up to 32 others) and without it
(--batch-max 1: one model call per question). For 1, 8 and 32 concurrent
clients, a bounded load generator sends a fixed number of GET /search
requests with real StackFAQ rewordings and stops by itself; it counts every
non-200 answer and failure as an error. Only ever targets 127.0.0.1.
Prints the CPU, a table and one JSON line.

    python bench/serve.py
    python bench/serve.py --requests 200 --clients 1 8 32
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from hostinfo import cpu_info, cpu_line, encoder_runs, runs_line  # noqa: E402  (bench/ is on sys.path as the script's folder)

from index import Index  # noqa: E402
from index.ingest.sources import read_documents  # noqa: E402
from search.beir import load_queries  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "stackfaq"


def start_server(index: Path, extra: list[str]) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-c", "from cli import main; main()", "serve", "--index", str(index),
                             "--host", "127.0.0.1", "--port", "0", *extra], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    found = re.search(r"http://127\.0\.0\.1:\d+", line)
    if not found:
        proc.kill()
        raise RuntimeError(f"the server did not start: {line}{proc.stderr.read()[-2000:]}")
    url = found.group(0)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the server did not become ready")


def load(url: str, questions: list[str], clients: int, requests: int) -> dict:
    """``requests`` GET /search calls from ``clients`` concurrent clients (one connection each), all in
    one thread of this process (asyncio), so the load generator takes little of the CPU it measures."""

    async def run() -> tuple[list[float], int, float]:
        latencies: list[float] = []
        errors = 0
        counter = iter(range(requests))

        async def client() -> None:
            nonlocal errors
            async with httpx.AsyncClient(base_url=url, timeout=60) as http:
                for n in counter:
                    started = time.perf_counter()
                    try:
                        q = questions[n % len(questions)]
                        ok = (await http.get("/search", params={"q": q, "k": 10})).status_code == 200
                    except httpx.HTTPError:
                        ok = False
                    latencies.append(time.perf_counter() - started)
                    errors += not ok

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        return latencies, errors, time.perf_counter() - started

    latencies, errors, wall = asyncio.run(run())
    ms = sorted(1000 * x for x in latencies)
    return {"clients": clients, "requests": len(latencies), "rps": round(len(latencies) / wall, 1),
            "p50_ms": round(statistics.median(ms), 2), "p99_ms": round(ms[min(len(ms) - 1, int(0.99 * len(ms)))], 2),
            "errors": errors}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=400, help="requests per measurement")
    parser.add_argument("--workers-threads", type=int, default=1)
    parser.add_argument("--backend", choices=["auto", "onnx", "torch"], default=None,
                        help="inference backend of the served index (default: auto)")
    parser.add_argument("--quick", action="store_true", help="1 and 4 clients, 40 requests each (a smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.clients, args.requests = [1, 4], 40
    if not DATA.is_dir():
        print(f"skipped: StackFAQ data not found at {DATA}", file=sys.stderr)
        return 0
    questions = [q.text for q in load_queries(DATA / "queries.jsonl") if q.text.strip()]
    rows = []
    with tempfile.TemporaryDirectory(prefix="semsearch-bench-serve-") as tmp:
        index = Path(tmp) / "index"
        Index.build(index, read_documents([DATA / "corpus.jsonl"]), backend=args.backend)
        served = Index.open(index).encoder
        backend = runs_line(served)
        modes = {"micro-batching": ["--batch-max", "32", "--batch-window-ms", "10"],
                 "one at a time": ["--batch-max", "1"]}
        for mode, extra in modes.items():
            proc, url = start_server(index, extra + ["--workers-threads", str(args.workers_threads)])
            try:
                load(url, questions, 4, 40)  # warm-up
                for clients in args.clients:
                    row = {"mode": mode, **load(url, questions, clients, args.requests)}
                    rows.append(row)
                    print(json.dumps(row), file=sys.stderr)
            finally:
                proc.terminate()
                proc.wait(30)
    info = {**cpu_info(), **encoder_runs(served), "backend": served.backend, "workers_threads": args.workers_threads}
    print(f"machine: {cpu_line(info)}; {backend}, {args.workers_threads} worker thread(s)")
    print(f"{'mode':<15} {'clients':>7} {'requests':>8} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>8} {'errors':>6}")
    for r in rows:
        print(f"{r['mode']:<15} {r['clients']:>7} {r['requests']:>8} {r['rps']:>7.1f} {r['p50_ms']:>7.1f} "
              f"{r['p99_ms']:>8.1f} {r['errors']:>6}")
    by = {(r["mode"], r["clients"]): r for r in rows}
    for clients in args.clients:
        on, off = by[("micro-batching", clients)], by[("one at a time", clients)]
        print(f"{clients} clients: micro-batching gives {on['rps'] / off['rps']:.2f}x the requests per second")
    print(json.dumps({"benchmark": "serve", **info, "results": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
