"""The HTTP service, started on a free loopback port and called over HTTP.

Servers run in this process (uvicorn in a thread) so that a test can hold the
loading step; one test starts the real `semsearch serve` command and asks it
through `semsearch query --server`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from servers import ready, serving, wait_until

from index import Index
from search import Searcher, service
from search.faq import faq_documents

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "s3cret-token"
FAQ = [
    {"id": "pw", "question": "how do i reset my password", "answer": "Use the forgot password link."},
    {"id": "del", "questions": ["how do i delete my account", "remove my account"], "answer": "Settings, delete."},
    {"id": "bill", "question": "where is my invoice", "answer": "Billing, invoices."},
    {"id": "bank", "question": "the bank of the river", "answer": "By the water."},
]
DOCS = [{"id": f"d{i}", "text": text, "metadata": {"n": i, "kind": "even" if i % 2 == 0 else "odd"}}
        for i, text in enumerate(["the quick brown fox", "hello world", "the cat sat on the mat",
                                  "money in the bank", "a boat on the sea", "apple and orange fruit"])]


@pytest.fixture
def faq_index(tiny_model, tmp_path) -> Path:
    path = tmp_path / "idx"
    Index.create(path, model=tiny_model).add([*faq_documents(FAQ), *DOCS])
    return path


@pytest.fixture
def server(faq_index, tmp_path):
    with serving(faq_index, token=TOKEN, max_body_bytes=64 * 1024) as (url, app):
        ready(url)
        yield url, app, faq_index


# --- reading -------------------------------------------------------------------------------------------
def test_get_search_gives_the_hits_of_the_library(server):
    url, _, index = server
    response = httpx.get(f"{url}/search", params={"q": "the bank of the river", "k": 3})
    assert response.status_code == 200
    body = response.json()
    want = [h.as_dict() for h in Searcher(index).search("the bank of the river", k=3)]
    assert body["query"] == "the bank of the river" and body["hits"] == json.loads(json.dumps(want))
    filtered = httpx.get(f"{url}/search", params=[("q", "fruit"), ("k", "10"), ("where", "kind=odd")]).json()
    assert filtered["hits"] and {h["metadata"]["kind"] for h in filtered["hits"]} == {"odd"}


def test_post_search_answers_every_query_in_order_and_reports_bad_ones(server):
    url, _, _ = server
    queries = ["hello world", "", "a boat on the sea", "   "]
    response = httpx.post(f"{url}/search", json={"queries": queries, "k": 2})
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["query"] for r in results] == queries
    assert results[0]["hits"][0]["id"] == "d1" and results[2]["hits"][0]["id"] == "d4"
    assert "empty" in results[1]["error"] and "empty" in results[3]["error"]
    assert "hits" not in results[1]


@pytest.mark.parametrize("request_, status, message", [
    (("GET", "/search", {"params": {"q": ""}}), 400, "empty"),
    (("GET", "/search", {"params": {"q": "x", "k": 0}}), 422, "k"),
    (("GET", "/search", {"params": {"q": "x", "k": 1001}}), 422, "k"),
    (("GET", "/search", {"params": {"q": "x", "where": "nokey"}}), 422, "key=value"),
    (("GET", "/search", {"params": {"q": "x", "where": '{"$bogus": 1}'}}), 422, "where.$bogus: unknown operator $bogus"),
    (("GET", "/search", {"params": {"q": "x", "where": '{"year": '}}), 422, "where line 1 column 10"),
    (("POST", "/search", {"json": {"queries": ["x"], "where": {"year": {"$gte": "soon"}}}}), 422,
     "invalid filter at where.year.$gte: a range takes a number or an ISO date"),
    (("GET", "/search", {}), 422, "q"),
    (("POST", "/search", {"content": b"{not json", "headers": {"content-type": "application/json"}}), 422, ""),
    (("POST", "/search", {"json": {"queries": ["x"], "k": "many"}}), 422, "k"),
    (("POST", "/faq/answer", {"json": {"question": ""}}), 422, "question"),
    (("POST", "/embed", {"json": {"texts": []}}), 422, "texts"),
    (("POST", "/embed", {"json": {"texts": ["ok", " "]}}), 400, "empty"),
    (("GET", "/nowhere", {}), 404, "Not Found"),
    (("POST", "/search", {"content": b"x" * (65 * 1024), "headers": {"content-type": "application/json"}}), 413, "MB"),
])
def test_bad_requests_get_a_json_error_and_the_right_status(server, request_, status, message):
    url, _, _ = server
    method, path, kwargs = request_
    response = httpx.request(method, f"{url}{path}", **kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    assert message in body["error"] and "Traceback" not in response.text


def test_a_body_over_the_limit_without_a_length_is_refused(server):
    url, _, _ = server

    def chunks():
        for _ in range(100):
            yield b"y" * 1024

    response = httpx.post(f"{url}/documents", content=chunks(), headers={"content-type": "application/json",
                                                                        "authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 413 and "MB" in response.json()["error"]


def test_faq_answer_and_not_sure(server):
    url, _, index = server
    from search.calibration import SETTING, Calibration, Rates

    with Index.open(index) as idx:  # a strict calibration: only a near-exact question is answered
        rates = Rates(0.9999, 0.0, 0.5, 1.0, 0.0, 10, 10)
        idx.set_setting(SETTING, Calibration.from_rates(rates, 0.95, idx.config).as_dict())
    sure = httpx.post(f"{url}/faq/answer", json={"question": "how do i reset my password"}).json()
    assert sure["confident"] and sure["match"]["id"] == "pw" and sure["match"]["answer"] == FAQ[0]["answer"]
    assert all(m["id"] != "pw" for m in sure["runners_up"])
    unsure = httpx.post(f"{url}/faq/answer", json={"question": "reset my password please"}).json()
    assert unsure["confident"] is False and unsure["match"] is None and len(unsure["runners_up"]) == 3
    assert unsure["calibrated"] is True and unsure["threshold"] == 0.9999
    assert set(sure) == {"question", "confident", "match", "runners_up", "calibrated", "threshold", "margin",
                         "answer_weight"}
    only = {"faq_id": {"$ne": "pw"}}  # a filter: the entry that would answer is left out
    other = httpx.post(f"{url}/faq/answer", json={"question": "how do i reset my password", "where": only}).json()
    assert other["confident"] is False and other["runners_up"] and all(m["id"] != "pw" for m in other["runners_up"])
    bad = httpx.post(f"{url}/faq/answer", json={"question": "x", "where": {"faq_id": {"$bad": 1}}})
    assert bad.status_code == 422 and "where.faq_id.$bad" in bad.json()["error"]


def test_a_calibration_that_weighs_answers_answers_as_the_library_does(server):
    url, _, index = server
    from search import FAQ as FAQBot
    from search.calibration import SETTING, Calibration, Rates

    with Index.open(index) as idx:
        rates = Rates(0.2, 0.0, 0.5, 1.0, 0.0, 10, 10)
        idx.set_setting(SETTING, Calibration.from_rates(rates, 0.95, idx.config, answer_weight=0.4).as_dict())
    for question in ("reset my password please", "where do i find the invoice", "forgot password link"):
        served = httpx.post(f"{url}/faq/answer", json={"question": question}).json()
        local = FAQBot(index).answer(question).as_dict()
        assert served["answer_weight"] == local["answer_weight"] == 0.4
        assert [m["id"] for m in served["runners_up"]] == [m["id"] for m in local["runners_up"]]
        for a, b in zip([served["match"], *served["runners_up"]], [local["match"], *local["runners_up"]]):
            if a is None or b is None:
                assert a is b is None
                continue
            assert a["score"] == pytest.approx(a["question_score"] + 0.4 * a["answer_score"], abs=1e-6)
            assert (a["score"], a["answer_score"]) == pytest.approx((b["score"], b["answer_score"]), abs=1e-5)


def test_embed_gives_the_index_encoders_vectors(server):
    url, _, index = server
    body = httpx.post(f"{url}/embed", json={"texts": ["hello world", "the cat"]}).json()
    want = Searcher(index).encoder.encode(["hello world", "the cat"])
    assert body["dimension"] == 32 and body["layer"] == -2 and len(body["vectors"]) == 2
    assert max(abs(a - b) for row, w in zip(body["vectors"], want) for a, b in zip(row, w)) < 1e-6


def test_index_info(server):
    url, _, index = server
    info = httpx.get(f"{url}/index").json()
    assert info["documents"] == Index.open(index).info().documents and info["layer"] == -2


def test_openapi_documents_every_endpoint(server):
    url, _, _ = server
    spec = httpx.get(f"{url}/openapi.json").json()
    assert {"/search", "/faq/answer", "/embed", "/documents", "/documents/{doc_id}", "/index", "/health"} <= set(spec["paths"])
    hit = spec["components"]["schemas"]["HitModel"]["properties"]
    assert all(field.get("description") for field in hit.values())
    assert httpx.get(f"{url}/docs").status_code == 200


# --- writing -----------------------------------------------------------------------------------------
def test_writes_need_the_token(server):
    url, _, _ = server
    doc = {"documents": [{"id": "new", "text": "where do i find my invoice"}]}
    assert httpx.post(f"{url}/documents", json=doc).status_code == 401
    assert httpx.post(f"{url}/documents", json=doc, headers={"authorization": "Bearer wrong"}).status_code == 401
    assert httpx.delete(f"{url}/documents/d1", headers={"authorization": "Basic " + TOKEN}).status_code == 401
    ok = httpx.post(f"{url}/documents", json=doc, headers={"authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200 and ok.json()["added"] == 1
    again = httpx.post(f"{url}/documents", json=doc, headers={"authorization": f"Bearer {TOKEN}"}).json()
    assert again["unchanged"] == 1
    hit = httpx.get(f"{url}/search", params={"q": "where do i find my invoice", "k": 1}).json()["hits"][0]
    assert hit["id"] == "new" and hit["score"] == pytest.approx(1.0, abs=1e-4)
    gone = httpx.delete(f"{url}/documents/new", headers={"authorization": f"Bearer {TOKEN}"})
    assert gone.status_code == 200 and gone.json() == {"deleted": "new"}
    missing = httpx.delete(f"{url}/documents/new", headers={"authorization": f"Bearer {TOKEN}"})
    assert missing.status_code == 404 and "new" in missing.json()["error"]


def test_a_server_without_a_token_is_read_only(faq_index):
    with serving(faq_index) as (url, _):
        ready(url)
        response = httpx.post(f"{url}/documents", json={"documents": [{"id": "x", "text": "y"}]},
                              headers={"authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 403 and "read-only" in response.json()["error"]
        assert httpx.delete(f"{url}/documents/d1").status_code == 403


def test_reads_keep_answering_during_a_write(server):
    url, _, _ = server
    docs = {"documents": [{"id": f"w{i}", "text": f"the fox number {i} jumps over the dog"} for i in range(300)]}
    with ThreadPoolExecutor(8) as pool:
        write = pool.submit(httpx.post, f"{url}/documents", json=docs, headers={"authorization": f"Bearer {TOKEN}"},
                            timeout=120)
        reads = [pool.submit(httpx.get, f"{url}/search", params={"q": "hello world", "k": 1}, timeout=120)
                 for _ in range(60)]
        statuses = [r.result().status_code for r in reads]
        assert write.result().status_code == 200
    assert statuses == [200] * 60
    assert httpx.get(f"{url}/index").json()["documents"] == len(DOCS) + 5 + 300


# --- following the index -------------------------------------------------------------------------------
@pytest.mark.slow
def test_commits_and_rebuilds_of_another_writer_are_followed(server):
    url, _, index = server
    before = httpx.get(f"{url}/index").json()["generation"]
    writer = subprocess.run([sys.executable, "-c", "from cli import main; main()", "index", "add", "-",
                             "--index", str(index), "-q"], input='{"_id": "late", "text": "pear fruit from the sea"}\n',
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert writer.returncode == 0, writer.stderr
    hit = httpx.get(f"{url}/search", params={"q": "pear fruit from the sea", "k": 1}).json()["hits"][0]
    assert hit["id"] == "late" and hit["score"] == pytest.approx(1.0, abs=1e-4)
    Index.open(index).rebuild(layer=-1)  # another connection re-encodes with another layer
    after = httpx.get(f"{url}/index").json()
    assert after["generation"] > before and after["layer"] == -1
    hit = httpx.get(f"{url}/search", params={"q": "a boat on the sea", "k": 1}).json()["hits"][0]
    assert hit["id"] == "d4" and hit["score"] == pytest.approx(1.0, abs=1e-5)  # queries embedded the new way


# --- loading, and micro-batching ----------------------------------------------------------------------------
def test_health_is_503_until_the_index_is_loaded(faq_index, monkeypatch):
    release = threading.Event()
    real = service.make_runner

    def slow(path):
        release.wait(120)
        return real(path)

    monkeypatch.setattr(service, "make_runner", slow)
    with serving(faq_index) as (url, _):
        loading = httpx.get(f"{url}/health")
        assert loading.status_code == 503 and loading.json()["status"] == "loading"
        search = httpx.get(f"{url}/search", params={"q": "x"})
        assert search.status_code == 503 and "loading" in search.json()["error"]
        release.set()
        ready(url)
        assert httpx.get(f"{url}/search", params={"q": "hello world"}).status_code == 200


def test_an_index_that_cannot_load_says_why(faq_index, monkeypatch, tmp_path):
    with serving(tmp_path / "nothing-here") as (url, _):
        health = wait_until(lambda: (r := httpx.get(f"{url}/health")).json()["status"] == "error" and r,
                            what="the load to fail")
        assert health.status_code == 503 and "no semsearch index" in health.json()["error"]
        assert httpx.get(f"{url}/search", params={"q": "x"}).status_code == 503


def test_concurrent_questions_share_model_calls(faq_index):
    with serving(faq_index, batch_window=0.05, batch_max=64) as (url, app):
        ready(url)
        texts = [d["text"] for d in DOCS] * 8
        with ThreadPoolExecutor(16) as pool:
            replies = list(pool.map(lambda t: httpx.get(f"{url}/search", params={"q": t, "k": 1}, timeout=60), texts))
        assert all(r.status_code == 200 for r in replies)
        assert [r.json()["hits"][0]["text"] for r in replies] == texts  # each got its own answer
        batcher = app.state.semsearch.batcher
        assert batcher.items >= len(texts) and batcher.batches < batcher.items  # some calls were shared


# --- the real command ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_semsearch_serve_and_query_through_it(faq_index, tmp_path):
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)  # readable by others, serve warns first (tests/test_hostile.py)
    proc = subprocess.Popen([sys.executable, "-c", "from cli import main; main()", "serve", "--index", str(faq_index),
                             "--port", "0", "--token-file", str(token)], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        line = wait_until(proc.stderr.readline, what="the server to say where it listens")
        url = re.search(r"http://[\d.]+:\d+", line).group(0)
        assert "writes need the token" in line
        ready(url)
        env = {**os.environ, "SEMSEARCH_SERVER": url}
        remote = subprocess.run([sys.executable, "-c", "from cli import main; main()", "query", "hello world",
                                 "-k", "3", "--json"], cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)
        local = subprocess.run([sys.executable, "-c", "from cli import main; main()", "query", "hello world",
                                "-k", "3", "--json", "--index", str(faq_index)], cwd=ROOT, capture_output=True,
                               text=True, timeout=300)
        assert remote.returncode == 0 and local.returncode == 0, remote.stderr + local.stderr
        assert json.loads(remote.stdout) == json.loads(local.stdout)
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.mark.slow
def test_the_webhook_example_answers_through_the_service(faq_index):
    with serving(faq_index) as (url, _):
        ready(url)
        bot = subprocess.Popen([sys.executable, str(ROOT / "examples" / "webhook_bot.py"), "--semsearch", url,
                                "--port", "0"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        try:
            line = wait_until(bot.stdout.readline, what="the webhook to start")
            hook = re.search(r"http://[\d.]+:\d+/webhook", line).group(0)
            sure = httpx.post(hook, json={"ticket": 7, "message": "how do i reset my password"}).json()
            assert sure == {"ticket": 7, "reply": FAQ[0]["answer"], "handover": False}
            assert httpx.post(hook, json={"ticket": 8}).status_code == 400
        finally:
            bot.terminate()
            bot.wait(30)
