"""``semsearch serve`` under abuse, over HTTP on 127.0.0.1 only, bounded in count and time.

While 1,000 idle connections are held open, a client trickles a request body byte by byte, others
send oversized headers (one 100 KB header, then 8,000 small ones, about 100 KB) and a client tries 200 wrong
tokens, a well-behaved client searches and writes: every one of its requests must succeed (within
a generous deadline, not a latency threshold). The abusers must get a 4xx or a closed connection,
never a 5xx. The server's own output must not contain a token, the right one or a wrong one.
A fast test checks that the token is compared with ``hmac.compare_digest`` (constant time) on every
attempt. Waits poll with a deadline; the trickling client paces itself, nothing else sleeps.
"""

from __future__ import annotations

import hmac
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from servers import ready, serving, wait_until

from index import Index

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "abuse-test-token-7f3a"
IDLE = 1000
WRONG_TOKENS = 200
GOOD_REQUESTS = 20
BODY_SECONDS = 2.0
DEADLINE = 120  # seconds a well-behaved request may take on a loaded machine


def start(index: Path, token_file: Path, log: Path):
    """The command (this tree's ``cli``) on a free loopback port, its output to ``log``."""
    out = open(log, "w")
    proc = subprocess.Popen([sys.executable, "-c", "from cli import main; main()", "serve", "--index", str(index),
                             "--port", "0", "--token-file", str(token_file), "--body-seconds", str(BODY_SECONDS)],
                            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, text=True)
    url = wait_until(lambda: (m := re.search(r"http://127\.0\.0\.1:\d+", log.read_text())) and m.group(0)
                     or (proc.poll() is not None and pytest.fail(log.read_text())), deadline=300,
                     what="the server to start")
    ready(url)
    return proc, url, out


def raw_request(host: str, port: int, head: bytes) -> str:
    """Send ``head`` on a new connection; the status line of the reply ('' if the server hung up)."""
    with socket.create_connection((host, port), timeout=DEADLINE) as sock:
        try:
            sock.sendall(head)
            reply = sock.recv(4096).decode(errors="replace")
        except (ConnectionResetError, BrokenPipeError):
            return ""
    return reply.split("\r\n", 1)[0]


@pytest.mark.slow
def test_the_server_keeps_answering_others_while_it_is_abused(tiny_model, tmp_path):
    path = tmp_path / "idx"
    Index.create(path, model=tiny_model).add([{"id": f"d{i}", "text": f"note number {i} about the bank"}
                                              for i in range(20)])
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    log = tmp_path / "serve.log"
    proc, url, out = start(path, token_file, log)
    host, port = url.removeprefix("http://").split(":")
    port = int(port)
    outcomes: dict[str, list] = {"trickle": [], "wrong tokens": [], "big headers": [], "many headers": []}
    idle: list[socket.socket] = []

    def trickle():
        body = b'{"documents": [{"id": "slow", "text": "' + b"x" * 200 + b'"}]}'
        pace = threading.Event()  # never set: its wait() paces the bytes
        with socket.create_connection((host, port), timeout=DEADLINE) as sock:
            sock.sendall(b"POST /documents HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         + f"Authorization: Bearer {TOKEN}\r\nContent-Length: {len(body)}\r\n\r\n".encode())
            try:
                for i in range(len(body)):
                    sock.sendall(body[i:i + 1])
                    pace.wait(BODY_SECONDS / 50)  # the whole body would take 4x the server's body limit
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server gave up on it: its reply is below
            outcomes["trickle"].append(sock.recv(4096).decode(errors="replace").split("\r\n", 1)[0])

    def wrong_tokens():
        with httpx.Client(timeout=DEADLINE) as client:
            for n in range(WRONG_TOKENS):
                outcomes["wrong tokens"].append(client.post(
                    f"{url}/documents", json={"documents": [{"id": f"x{n}", "text": "no"}]},
                    headers={"Authorization": f"Bearer wrong-{n}-{TOKEN[::-1]}"}).status_code)

    def headers():
        outcomes["big headers"].append(raw_request(host, port, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: "
                                                   + b"a" * 100_000 + b"\r\n\r\n"))
        many = b"".join(f"X-H{i}: {i}\r\n".encode() for i in range(8000))
        outcomes["many headers"].append(raw_request(host, port, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                                    + many + b"\r\n"))

    try:
        for _ in range(IDLE):
            idle.append(socket.create_connection((host, port), timeout=DEADLINE))
        abusers = [threading.Thread(target=f) for f in (trickle, wrong_tokens, headers)]
        for thread in abusers:
            thread.start()
        good = []
        with httpx.Client(timeout=DEADLINE) as client:
            for n in range(GOOD_REQUESTS):
                good.append(client.get(f"{url}/search", params={"q": f"note {n}", "k": 3}).status_code)
                if n % 5 == 0:
                    good.append(client.post(f"{url}/documents", json={"documents": [{"id": f"good{n}", "text": "ok"}]},
                                            headers={"Authorization": f"Bearer {TOKEN}"}).status_code)
        for thread in abusers:
            thread.join(DEADLINE)
        assert idle[0].recv(1) == b"", "a connection that never sent anything should be closed by the server"
        assert good == [200] * len(good), good
        assert outcomes["trickle"] and outcomes["trickle"][0].startswith("HTTP/1.1 408"), outcomes["trickle"]
        assert outcomes["wrong tokens"] == [401] * WRONG_TOKENS, set(outcomes["wrong tokens"])
        for kind in ("big headers", "many headers"):
            (status,) = outcomes[kind]
            assert status == "" or re.match(r"HTTP/1\.1 4\d\d", status), (kind, status)
        assert httpx.get(f"{url}/health", timeout=DEADLINE).status_code == 200
    finally:
        for sock in idle:
            sock.close()
        proc.terminate()
        proc.wait(60)
        out.close()
    text = log.read_text()
    assert TOKEN not in text and TOKEN[::-1] not in text and "wrong-" not in text
    with Index.open(path) as index:
        assert set(index.store.documents([f"good{n}" for n in range(0, GOOD_REQUESTS, 5)])) == {
            f"good{n}" for n in range(0, GOOD_REQUESTS, 5)}
        assert not index.store.documents(["slow", *(f"x{n}" for n in range(WRONG_TOKENS))])
    print(f"abuse: {IDLE} idle connections, {len(good)} good requests all 200, {WRONG_TOKENS} wrong tokens "
          f"all 401, trickle {outcomes['trickle'][0]!r}, headers {outcomes['big headers'][0]!r} / "
          f"{outcomes['many headers'][0]!r}")


def test_every_token_attempt_is_compared_in_constant_time(tiny_model, tmp_path, monkeypatch):
    path = tmp_path / "idx"
    Index.create(path, model=tiny_model).add([{"id": "a", "text": "hello"}])
    compared = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: compared.append(1) or real(a, b))
    with serving(path, token=TOKEN) as (url, _):
        ready(url)
        for n in range(5):
            reply = httpx.post(f"{url}/documents", json={"documents": [{"id": "b", "text": "no"}]},
                               headers={"Authorization": f"Bearer wrong-{n}"}, timeout=DEADLINE)
            assert reply.status_code == 401 and f"wrong-{n}" not in reply.text
    assert len(compared) >= 5
