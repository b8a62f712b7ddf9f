"""Larger than memory: the ``ivf-disk`` index type against the same lists held in memory.

For each size N (default 1,000,000), N synthetic clustered 384-d unit vectors (seeded; 2,000
centres, each vector a centre plus noise) are built into an ``ivf-disk`` base with the backend's
own ``build`` (train on a sample, shards of ``SHARD`` vectors merged into one ``.ivfdata`` file) in a
child process, which reports its wall time and peak memory. A second child opens the base the
way a reader does and answers 200 noisy copies of stored vectors (cosine about 0.9 to them):
its memory after opening and after the queries (RssAnon: the process's own memory; RssFile: pages
of the mapped file, which the kernel takes back under pressure), and p50 latency warm (lists in
the page cache) and cold (the data file dropped from the page cache before every query), at the
default nprobe and at 4x it (cold: the first 30 queries), with recall@10 against exact search. A third child copies the same
lists into memory (what ``ivf`` holds) and answers the same queries, for comparison.

``--memory-limit 1G`` runs both search children again (30 queries) in a memory cgroup of that size (cgroup v1
or v2, where this process may create one; else it says so): the on-disk index answers from a data
file larger than the limit, the in-memory copy is killed. (A limit close to the process's own
needs, some 60 MiB, leaves the page cache no room and a search thrashes.)

Per-vector costs are printed with a projection to 10M and 100M passages.

    python bench/ondisk.py --sizes 1000000 --memory-limit 1G
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hostinfo import cpu_info, cpu_line  # noqa: E402

D = 384
CENTRES = 2000
BATCH = 50_000
QUERIES = 200
# a cold query reads every probed list from disk: seconds each at millions of vectors
COLD_QUERIES = int(os.environ.get("ONDISK_COLD_QUERIES", "30"))


def centres() -> np.ndarray:
    c = np.random.default_rng(12345).standard_normal((CENTRES, D)).astype(np.float32)
    return c / np.linalg.norm(c, axis=1, keepdims=True)


def batch(n: int, i: int, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Batch ``i`` of the N vectors: the same every time it is asked for."""
    start = i * BATCH
    size = min(BATCH, n - start)
    rng = np.random.default_rng(1000 + i)
    x = c[rng.integers(0, CENTRES, size)] + 0.06 * rng.standard_normal((size, D), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return np.arange(start, start + size, dtype=np.int64), x


def batches(n: int):
    c = centres()
    return lambda: (batch(n, i, c) for i in range((n + BATCH - 1) // BATCH))


def queries(n: int) -> np.ndarray:
    _, x = batch(n, 0, centres())
    rng = np.random.default_rng(7)
    q = x[:QUERIES] + 0.025 * rng.standard_normal((QUERIES, D), dtype=np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def exact_top(n: int, q: np.ndarray, k: int = 10) -> np.ndarray:
    best_s = np.full((len(q), k), -np.inf, np.float32)
    best_i = np.full((len(q), k), -1, np.int64)
    for ids, x in batches(n)():
        s = np.concatenate([best_s, q @ x.T], axis=1)
        i = np.concatenate([best_i, np.broadcast_to(ids, (len(q), len(ids)))], axis=1)
        top = np.argsort(-s, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(s, top, 1), np.take_along_axis(i, top, 1)
    return best_i


def memory() -> dict:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key = line.split(":")[0]
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                out[key] = round(int(line.split()[1]) / 1024, 1)  # MiB
    return out


# --- children ------------------------------------------------------------------------------
def child_build(n: int, folder: Path) -> dict:
    import threading

    import faiss

    from index.ann.ivf_disk import IVFDiskIndex

    faiss.omp_set_num_threads(os.cpu_count() or 1)
    peak_anon, done = [0.0], threading.Event()

    def watch():  # the peak of the process's own memory (RssAnon); VmHWM also counts mapped file pages
        while not done.wait(0.1):
            peak_anon[0] = max(peak_anon[0], memory().get("RssAnon", 0.0))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    started = time.perf_counter()
    built = IVFDiskIndex.build(D, n, batches(n), workdir=folder)
    built.save(folder / "vectors-1.faiss")
    seconds = time.perf_counter() - started
    done.set()
    watcher.join()
    np.save(folder / "queries.npy", queries(n))
    np.save(folder / "truth.npy", exact_top(n, queries(n)))
    return {"build_s": round(seconds, 1), "nlist": built.nlist, "default_nprobe": int(built.inner.nprobe),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "peak_anon_mib": peak_anon[0],
            "data_bytes": (folder / "vectors-1.ivfdata").stat().st_size,
            "header_bytes": (folder / "vectors-1.faiss").stat().st_size}


def drop_from_page_cache(path: Path, lists=None) -> None:
    """Evict the file's pages from the page cache; with ``lists`` (mapped ``OnDiskInvertedLists``) first
    unmap its pages from this process, which would otherwise keep them in memory."""
    if lists is not None and lists.totsize:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        libc.madvise(int(lists.ptr), int(lists.totsize), 4)  # MADV_DONTNEED
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def child_search(n: int, folder: Path, mode: str, limit: int = QUERIES) -> dict:
    import faiss

    from index.ann.registry import SearchSettings, load

    header, data = folder / "vectors-1.faiss", folder / "vectors-1.ivfdata"
    drop_from_page_cache(data)
    before = memory()
    started = time.perf_counter()
    index = load(header)
    if mode == "memory":  # the same lists copied into memory: what `ivf` holds
        ivf = faiss.extract_index_ivf(index.index)
        copy, lists = faiss.ArrayInvertedLists(ivf.nlist, ivf.code_size), ivf.invlists
        for i in range(ivf.nlist):
            if lists.list_size(i):
                copy.add_entries(i, lists.list_size(i), lists.get_ids(i), lists.get_codes(i))
        ivf.replace_invlists(copy, True)
        copy.this.disown()
        drop_from_page_cache(data)
    open_s = time.perf_counter() - started
    opened = memory()
    q = np.load(folder / "queries.npy")[:limit]
    truth = np.load(folder / "truth.npy")[:limit]  # computed by the build child, outside any memory limit
    out = {"mode": mode, "open_s": round(open_s, 2), "memory_before": before, "memory_opened": opened, "runs": []}
    for nprobe in (int(index.inner.nprobe), 4 * int(index.inner.nprobe)):
        settings = SearchSettings(nprobe=nprobe)
        temps = [("cold", True), ("warm", False)] if mode == "disk" else [("memory", False)]
        for label, cold in temps:
            times, found = [], []
            if not cold:
                index.search(q, 10, settings=settings)  # warm the lists
            for row in q[:COLD_QUERIES] if cold else q:
                if cold:
                    drop_from_page_cache(data, index.lists)
                t0 = time.perf_counter()
                _, ids = index.search(row[None, :], 10, settings=settings)
                times.append(time.perf_counter() - t0)
                found.append(ids[0])
            recall = float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)]))  # zip: cold is shorter
            out["runs"].append({"nprobe": nprobe, "cache": label, "p50_ms": round(1000 * statistics.median(times), 2),
                                "p99_ms": round(1000 * float(np.percentile(times, 99)), 2),
                                "recall_at_10": round(recall, 4)})
    out["memory_after"] = memory()
    return out


# --- a memory cgroup for the search children -------------------------------------------------
def make_cgroup(limit: int) -> tuple[Path, str] | None:
    """A memory cgroup limited to ``limit`` bytes (v1 or v2), or None where none can be made."""
    name = f"semsearch-bench-{os.getpid()}"
    for root, knob in ((Path("/sys/fs/cgroup/memory"), "memory.limit_in_bytes"), (Path("/sys/fs/cgroup"), "memory.max")):
        if not (root / knob).exists() and not (root / "cgroup.controllers").exists():
            continue
        group = root / name
        try:
            group.mkdir()
            (group / knob).write_text(str(limit))
            if (group / "memory.memsw.limit_in_bytes").exists():  # no swapping around the limit
                (group / "memory.memsw.limit_in_bytes").write_text(str(limit))
            return group, knob
        except OSError:
            shutil.rmtree(group, ignore_errors=True)
            try:
                group.rmdir()
            except OSError:
                pass
    return None


def run_child(args: list[str], group: Path | None) -> dict:
    cmd = [sys.executable, __file__, *args]
    preexec = None
    if group is not None:
        def preexec():  # join the cgroup before exec, so the whole child is limited
            (group / "cgroup.procs").write_text(str(os.getpid()))
    proc = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=preexec)
    if proc.returncode != 0:
        why = "killed by the kernel (out of memory)" if proc.returncode in (-9, 137) else proc.stderr.strip()[-300:]
        return {"failed": True, "returncode": proc.returncode, "why": why}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(float(text[:-1]) * units[text[-1].upper()]) if text[-1].upper() in units else int(text)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] in ("_build", "_search"):
        n, folder = int(sys.argv[2]), Path(sys.argv[3])
        result = (child_build(n, folder) if sys.argv[1] == "_build"
                  else child_search(n, folder, sys.argv[4], *map(int, sys.argv[5:6])))
        print(json.dumps(result))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--memory-limit", default=None, help="run the search children in a memory cgroup (e.g. 1G)")
    parser.add_argument("--workdir", default=None, help="where to write the indexes (default: a temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the built indexes")
    parser.add_argument("--only-limited", action="store_true", help="with --memory-limit: only the limited runs")
    parser.add_argument("--quick", action="store_true", help="20,000 vectors (a smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.sizes = [20_000]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="semsearch-ondisk-"))
    group = None
    if args.memory_limit:
        made = make_cgroup(parse_size(args.memory_limit))
        if made is None:
            print(f"note: no memory cgroup could be made here; the search children run without the "
                  f"{args.memory_limit} limit", file=sys.stderr)
        else:
            group = made[0]
    rows = []
    try:
        for n in args.sizes:
            folder = work / f"n{n}"
            folder.mkdir(parents=True, exist_ok=True)
            if not (folder / "truth.npy").exists():
                built = run_child(["_build", str(n), str(folder)], None)
            else:
                built = {"build_s": None, "reused": True,
                         "data_bytes": (folder / "vectors-1.ivfdata").stat().st_size,
                         "header_bytes": (folder / "vectors-1.faiss").stat().st_size}
            print(json.dumps({"n": n, "build": built}), file=sys.stderr)
            row = {"n": n, "build": built}
            for label, mode, limited in (("disk", "disk", None), ("memory", "memory", None),
                                         ("disk, limited", "disk", group), ("memory, limited", "memory", group)):
                if (limited is None and label.endswith("limited")) or (args.only_limited and limited is None):
                    continue
                queries_ = [] if limited is None else [str(COLD_QUERIES)]  # under a limit even "warm" lists
                row[label] = run_child(["_search", str(n), str(folder), mode, *queries_], limited)  # come from disk
                print(json.dumps({"n": n, label: row[label]}), file=sys.stderr)
            rows.append(row)
            if not args.keep:
                shutil.rmtree(folder, ignore_errors=True)
    finally:
        if group is not None:
            try:
                group.rmdir()
            except OSError:
                pass
        if not args.keep and not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    info = cpu_info()
    limit = f", search children limited to {args.memory_limit}" if group is not None else ""
    print(f"\nmachine: {cpu_line(info)}{limit}")
    for r in rows:
        n, b = r["n"], r["build"]
        print(f"\n{n:,} vectors ({D}-d): data file {b['data_bytes'] / 2**20:,.0f} MiB "
              f"({b['data_bytes'] / n:.0f} B/vector), header {b['header_bytes'] / 2**20:.1f} MiB; "
              f"build {b.get('build_s')} s, peak RSS {b.get('peak_rss_mib')} MiB (its own memory, RssAnon: "
              f"{b.get('peak_anon_mib')} MiB)")
        for label in [k for k in r if k not in ("n", "build")]:
            res = r[label]
            if res.get("failed"):
                print(f"  {label:>15}: failed: {res['why']}")
                continue
            m = res["memory_after"]
            print(f"  {label:>15}: opened in {res['open_s']} s; RssAnon {res['memory_opened'].get('RssAnon')} -> "
                  f"{m.get('RssAnon')} MiB, RssFile {m.get('RssFile')} MiB, peak RSS {m.get('VmHWM')} MiB")
            for run in res["runs"]:
                print(f"{'':>19}nprobe {run['nprobe']:>5} {run['cache']:>6}: p50 {run['p50_ms']:8.2f} ms, "
                      f"p99 {run['p99_ms']:8.2f} ms, recall@10 {run['recall_at_10']:.4f}")
    print(json.dumps({"benchmark": "ondisk", **info, "memory_limit": args.memory_limit if group else None,
                      "results": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
