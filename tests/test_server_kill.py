"""``semsearch serve`` SIGKILLed while clients write and read over HTTP, then restarted.

Each round starts the installed command on a free loopback port, runs two writers (one document
per POST, unique ids) and a reader against it, kills the server with SIGKILL once a randomly
drawn number of writes has been acknowledged, and restarts it. After every kill: every write
acknowledged with 200 is in the index, ``index check`` is clean, and no reader ever got a 5xx
while the server was up. Bounded in rounds and requests; the kill is triggered by a count of
acknowledgements, not by a timer.
"""

from __future__ import annotations

import random
import re
import signal
import subprocess
import threading

import httpx
import pytest
from servers import ready, wait_until

from index import Index

pytestmark = [pytest.mark.slow]
TOKEN = "kill-test-token"
ROUNDS = 4


def start(index, token_file):
    proc = subprocess.Popen(["semsearch", "serve", "--index", str(index), "--port", "0", "--token-file",
                             str(token_file)], stderr=subprocess.PIPE, text=True)
    lines = []
    wait_until(lambda: lines.append(proc.stderr.readline()) or "serving" in lines[-1] or proc.poll() is not None,
               deadline=300, what="the server to start")
    match = re.search(r"http://[\d.]+:\d+", lines[-1])
    assert match, lines
    url = match.group(0)
    ready(url)
    return proc, url


def test_acknowledged_writes_survive_a_killed_server(tiny_model, tmp_path):
    path = tmp_path / "idx"
    Index.create(path, model=tiny_model).add([{"id": "seed", "text": "the first document"}])
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    rng = random.Random(7)
    acked: list[str] = []
    kills = 0
    for round_no in range(ROUNDS):
        proc, url = start(path, token_file)
        stop = threading.Event()
        reader_statuses: list[int] = []
        lock = threading.Lock()
        target = len(acked) + rng.randint(2, 12)

        def writer(name):
            for n in range(200):
                if stop.is_set():
                    return
                doc_id = f"r{round_no}-{name}-{n}"
                try:
                    reply = httpx.post(f"{url}/documents", json={"documents": [{"id": doc_id, "text": f"note {n}"}]},
                                       headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
                except httpx.HTTPError:
                    return  # the server is gone
                if reply.status_code == 200:
                    with lock:
                        acked.append(doc_id)
                else:
                    assert reply.status_code in (409, 503), reply.text

        def reader():
            for _ in range(2000):
                if stop.is_set():
                    return
                try:
                    reader_statuses.append(httpx.get(f"{url}/search", params={"q": "note", "k": 3}, timeout=60)
                                           .status_code)
                except httpx.HTTPError:
                    return

        threads = [threading.Thread(target=writer, args=(w,)) for w in ("a", "b")] + [threading.Thread(target=reader)]
        for thread in threads:
            thread.start()
        try:
            wait_until(lambda: len(acked) >= target or not any(t.is_alive() for t in threads[:2]),
                       deadline=300, what="enough acknowledged writes")
            proc.send_signal(signal.SIGKILL)
            kills += 1
        finally:
            stop.set()
            for thread in threads:
                thread.join(120)
            proc.kill()
            proc.wait(30)
        assert all(status < 500 for status in reader_statuses), sorted(set(reader_statuses))
        with Index.open(path) as index:  # what a restarted server opens
            missing = [doc_id for doc_id in acked if doc_id not in index.store.documents(acked)]
            assert not missing, f"acknowledged writes lost after kill {kills}: {missing[:5]}"
            report = index.check(sample=10)
            assert report.ok, report.problems
    assert kills == ROUNDS and len(acked) >= ROUNDS * 2
    print(f"server kills {kills}, acknowledged writes {len(acked)}, lost 0")  # the figures docs/reliability.md quotes
