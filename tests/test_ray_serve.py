"""``semsearch serve --engine ray``: shard deployments behind one HTTP endpoint on a local Ray Serve.

The hits over HTTP equal one index's over the same documents (ids, and
scores to 1e-5); the errors are the JSON of ``semsearch serve``.
"""

from __future__ import annotations

import json
import logging
import socket
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import require

from index import Index
from index.distributed.shards import ShardedIndex
from search import Searcher

pytestmark = pytest.mark.slow

DOCS = [{"id": f"doc-{i}", "text": text, "metadata": {"topic": "ab"[i % 2]}} for i, text in enumerate([
    "how do i reset my password", "the bank of the river", "배를 타고 바다로 갔다", "the quick brown fox",
    "refund for a cancelled order", "pizza with extra cheese", "train tickets to the coast", "guitar lessons",
    "a fever and a cough", "snow in the mountains in winter"])]
QUERIES = ["reset the password", "river bank", "cheese pizza", "winter snow"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tiny_model, tmp_path_factory):
    """A 3-shard index and one index over the same documents; the shards served on a local Ray Serve."""
    ray = require("ray", "Ray is not installed (the ray extra)")
    httpx = require("httpx", "httpx is not installed (the test extra)")
    import index.options
    from search.ray_serve import RayServeSettings, start, stop

    root = tmp_path_factory.mktemp("served")
    saved = (index.options.DEFAULT_PRECISION, index.options.DEFAULT_BACKEND)
    index.options.DEFAULT_PRECISION, index.options.DEFAULT_BACKEND = "fp32", "torch"
    try:
        single, _ = Index.build(root / "single", DOCS, model=tiny_model)
        ShardedIndex.build(root / "sharded", DOCS, shards=3, model=tiny_model)
    finally:
        index.options.DEFAULT_PRECISION, index.options.DEFAULT_BACKEND = saved
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    port = free_port()
    try:
        settings = RayServeSettings(index=root / "sharded", replicas=2, replica_cpus=0.2, gateway_cpus=0.2)
        pool = ThreadPoolExecutor(1)  # bounded: replicas that cannot start fail the tests, not hang them
        serve = pool.submit(start, settings, host="127.0.0.1", port=port).result(timeout=300)
        pool.shutdown(wait=False)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            yield client, Searcher(single)
        stop()
        serve.shutdown()
    finally:
        ray.shutdown()


def assert_same(hits_json, hits) -> None:
    assert [h["id"] for h in hits_json] == [h.id for h in hits]
    assert [h["score"] for h in hits_json] == pytest.approx([h.score for h in hits], abs=1e-5)
    assert [h["passage"] for h in hits_json] == [h.as_dict()["passage"] for h in hits]
    assert [(h["text"], h["metadata"]) for h in hits_json] == [(h.text, h.metadata) for h in hits]


def test_health_is_ready(served):
    client, _ = served
    reply = client.get("/health")
    assert reply.status_code == 200 and reply.json() == {"status": "ready", "error": None}


def test_each_shard_is_a_deployment_with_its_replicas(served):
    from ray import serve

    app = serve.status().applications["semsearch"]
    assert sorted(app.deployments) == ["gateway", "shard-0", "shard-1", "shard-2"]
    for n in range(3):
        assert app.deployments[f"shard-{n}"].replica_states == {"RUNNING": 2}


def test_get_search_gives_one_indexs_hits(served):
    client, single = served
    for query in QUERIES:
        for k in (1, 4, 20):
            reply = client.get("/search", params={"q": query, "k": k})
            assert reply.status_code == 200, reply.text
            assert reply.json()["query"] == query
            assert_same(reply.json()["hits"], single.search(query, k=k))
    reply = client.get("/search", params={"q": "river", "k": 3, "where": "topic=b"})
    assert_same(reply.json()["hits"], single.search("river", k=3, where={"topic": "b"}))
    language = {"$or": [{"topic": {"$ne": "b"}}, {"$contains": "pizza"}]}  # the filter language too
    reply = client.get("/search", params={"q": "river", "k": 5, "where": json.dumps(language)})
    assert_same(reply.json()["hits"], single.search("river", k=5, where=language))


def test_post_search_answers_in_order_with_errors_per_query(served):
    client, single = served
    reply = client.post("/search", json={"queries": [*QUERIES, "   "], "k": 3})
    assert reply.status_code == 200, reply.text
    results = reply.json()["results"]
    assert [r["query"] for r in results] == [*QUERIES, "   "]
    for query, result in zip(QUERIES, results):
        assert_same(result["hits"], single.search(query, k=3))
    assert "empty" in results[-1]["error"] and "hits" not in results[-1]


def test_bad_requests_are_json_errors(served):
    client, _ = served
    assert client.get("/search", params={"q": "x", "k": 0}).status_code == 422
    bad = client.get("/search", params={"q": "x", "where": "nokeyvalue"})
    assert bad.status_code == 422 and "key=value" in bad.json()["error"]
    bad = client.post("/search", json={"queries": ["x"], "where": {"topic": {"$gte": "soon"}}})
    assert bad.status_code == 422 and bad.json()["error"].startswith("invalid filter at where.topic.$gte")
    empty = client.get("/search", params={"q": "  "})
    assert empty.status_code == 400 and "empty" in empty.json()["error"]
