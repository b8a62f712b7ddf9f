"""The filter language: every operator against a plain Python evaluation of the same filter.

``reference`` below evaluates a filter over documents in Python, written from
the language's description (``index/storage/filter_language.py``), not from its
SQL. Hypothesis draws random documents and random filters; the answer through
the filter indexes (the store), the API (``Searcher``), the CLI (``--filter``)
and HTTP (``POST /search``) must be the reference's set of documents. Also: the
short ``--where`` syntax, errors that name their position, writes that keep
the indexes current, a key no document has, 10,000 ``$in`` values, and the
planner returning ``k`` hits on an approximate index.
"""

from __future__ import annotations

import json
import math
import sqlite3

import httpx
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli import cli
from index import Index
from index.records import Passage
from index.storage import filter_language, filter_syntax, filters
from index.storage.filter_language import FilterError
from index.storage.store import MetadataStore
from search import Searcher
from servers import ready, serving

KEYS = ["lang", "year", "flag", "tags"]
SCALARS = ["en", "ko", "EN", "1", "2020", "true", "True", "false", "2021-01-01", "2022-06-30",
           "2021-03-04T10:00:00", 0, 1, 2, 2020, 2021, 2022, 0.5, 1.0, 2.5, -3, True, False, None]
WORDS = ["E1234", "error", "refund", "ok", "Error", "boat", "E12", "x"]


# --- the reference: the language in plain Python -------------------------------------------------------
def sql_text(value) -> str:
    """A number's text as SQLite writes it (CAST(x AS TEXT)) for the values drawn here."""
    return repr(float(value)) if isinstance(value, float) else str(value)


def equal(value, wanted) -> bool:
    if isinstance(wanted, bool):
        return isinstance(value, bool) and value == wanted
    if wanted is None:
        return value is None
    if isinstance(wanted, (int, float)):
        return isinstance(value, (int, float)) and not isinstance(value, bool) and value == wanted
    if isinstance(wanted, str):
        if isinstance(value, bool):
            return ("true" if value else "false") == wanted.lower()
        if isinstance(value, (int, float)):
            return sql_text(value) == wanted
        return isinstance(value, str) and value == wanted
    return isinstance(value, list) and json.dumps(value) == json.dumps(wanted)


def in_range(value, op: str, bound) -> bool:
    if isinstance(bound, str):
        ok = isinstance(value, str)
    else:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok:
        return False
    return {"$gt": value > bound, "$gte": value >= bound, "$lt": value < bound, "$lte": value <= bound}[op]


def reference(text: str, meta: dict, f: dict) -> bool:
    for key, arg in f.items():
        if key == "$and":
            ok = all(reference(text, meta, g) for g in arg)
        elif key == "$or":
            ok = any(reference(text, meta, g) for g in arg)
        elif key == "$not":
            ok = not reference(text, meta, arg)
        elif key == "$contains":
            ok = arg in text
        elif isinstance(arg, dict):
            ok = all(key_op(meta, key, op, v) for op, v in arg.items())
        else:
            ok = key in meta and equal(meta[key], arg)
        if not ok:
            return False
    return True


def key_op(meta: dict, key: str, op: str, arg) -> bool:
    present = key in meta
    value = meta.get(key)
    if op == "$eq":
        return present and equal(value, arg)
    if op == "$ne":
        return not (present and equal(value, arg))
    if op == "$in":
        return present and any(equal(value, a) for a in arg)
    if op == "$nin":
        return not (present and any(equal(value, a) for a in arg))
    if op == "$exists":
        return present == arg
    return present and in_range(value, op, arg)


# --- random documents and filters ---------------------------------------------------------------------
values = st.one_of(st.sampled_from(SCALARS), st.lists(st.sampled_from([1, 2, "en"]), max_size=2))
metadata = st.dictionaries(st.sampled_from(KEYS), values, max_size=4)
texts = st.lists(st.sampled_from(WORDS), min_size=1, max_size=4).map(" ".join)
documents = st.lists(st.tuples(texts, metadata), min_size=1, max_size=25)

any_key = st.sampled_from(KEYS + ["nobody"])
scalar = st.sampled_from(SCALARS)
bound = st.sampled_from([0, 1, 2020, 2021, 2.5, -1, "2021-01-01", "2021-06-30", "2022-06-30T00:00:00"])
key_ops = st.one_of(
    st.tuples(st.sampled_from(["$eq", "$ne"]), st.one_of(scalar, st.just([1, 2]))),
    st.tuples(st.sampled_from(["$gt", "$gte", "$lt", "$lte"]), bound),
    st.tuples(st.sampled_from(["$in", "$nin"]), st.lists(scalar, min_size=1, max_size=4)),
    st.tuples(st.just("$exists"), st.booleans()),
)
leaf = st.one_of(
    st.builds(lambda k, v: {k: v}, any_key, scalar),
    st.builds(lambda k, ops: {k: dict(ops)}, any_key, st.lists(key_ops, min_size=1, max_size=2)),
    st.builds(lambda w: {"$contains": w}, st.sampled_from(WORDS + ["1234", "rror", "E1234 e", "oa"])),
)
filters_ = st.recursive(leaf, lambda inner: st.one_of(
    st.builds(lambda fs: {"$and": fs}, st.lists(inner, min_size=1, max_size=3)),
    st.builds(lambda fs: {"$or": fs}, st.lists(inner, min_size=1, max_size=3)),
    st.builds(lambda f: {"$not": f}, inner),
    st.builds(lambda a, b: {**a, **b}, inner, inner),
), max_leaves=6)


def store_with(path, docs) -> MetadataStore:
    store = MetadataStore.connect(path, create=True)
    store.initialise({})
    with store.transaction():
        for i, (text, meta) in enumerate(docs):
            store.write_document(f"d{i}", text, json.dumps(meta, sort_keys=True), "h",
                                 [Passage(0, 0, len(text), text)], np.zeros((1, 4), np.float32))
    return store


def matched_documents(store: MetadataStore, where) -> set[str]:
    ids = filters.passage_ids(store.conn, where)
    return {doc for doc, _ in store.passages(ids.tolist()).values()}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(docs=documents, where=filters_)
def test_the_indexes_answer_as_the_plain_evaluation(tmp_path_factory, docs, where):
    store = store_with(tmp_path_factory.mktemp("f"), docs)
    try:
        want = {f"d{i}" for i, (text, meta) in enumerate(docs) if reference(text, meta, where)}
        assert matched_documents(store, where) == want, where
    finally:
        store.close()


# --- one index through the API, the CLI and HTTP -------------------------------------------------------
CORPUS_SEED = 7


def corpus() -> list[dict]:
    rng = np.random.default_rng(CORPUS_SEED)
    docs = []
    for i in range(40):
        meta = {k: SCALARS[rng.integers(len(SCALARS))] for k in KEYS if rng.random() < 0.7}
        text = " ".join(WORDS[j] for j in rng.integers(len(WORDS), size=3))
        docs.append({"id": f"doc{i:02d}", "text": f"{text} number {i}", "metadata": meta})
    return docs


DOCS = corpus()


def expected(where) -> set[str]:
    return {d["id"] for d in DOCS if reference(d["text"], d["metadata"], where)}


@pytest.fixture(scope="module")
def built(tiny_model, tmp_path_factory):
    index, _ = Index.build(tmp_path_factory.mktemp("filters") / "idx", DOCS, model=tiny_model)
    index.close()
    return index.path


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(where=filters_)
def test_the_api_returns_every_matching_document(built, where):
    hits = Searcher(built).search("error number", k=len(DOCS) + 5, where=where)
    assert {h.id for h in hits} == expected(where), where


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(where=filters_)
def test_the_cli_filter_returns_every_matching_document(built, where):
    result = CliRunner().invoke(cli, ["query", "error", "--index", str(built), "-k", "100", "--json",
                                      "--filter", json.dumps(where)])
    assert result.exit_code == 0, result.output
    assert {h["id"] for h in json.loads(result.stdout)["hits"]} == expected(where), where


def test_http_takes_the_language_in_the_body_and_the_query_string(built):
    examples = []

    @settings(max_examples=15, deadline=None, database=None)
    @given(where=filters_)
    def collect(where):
        examples.append(where)

    collect()
    with serving(built) as (url, _):
        ready(url)
        for where in examples:
            body = {"queries": ["error"], "k": 100, "where": where}
            got = httpx.post(f"{url}/search", json=body, timeout=60).json()["results"][0]["hits"]
            assert {h["id"] for h in got} == expected(where), where
            got = httpx.get(f"{url}/search", params={"q": "error", "k": 100, "where": json.dumps(where)},
                            timeout=60).json()["hits"]
            assert {h["id"] for h in got} == expected(where), where
        # one filter per query (wheres), each ANDed with the common where
        own = [{"year": {"$gte": 2021}}, None, {"$contains": "E1234"}]
        body = {"queries": ["error", "error", "error"], "k": 100, "where": {"lang": {"$ne": "en"}}, "wheres": own}
        got = httpx.post(f"{url}/search", json=body, timeout=60).json()["results"]
        for w, result in zip(own, got):
            want = expected({"$and": [{"lang": {"$ne": "en"}}, w]} if w else {"lang": {"$ne": "en"}})
            assert {h["id"] for h in result["hits"]} == want, w
        for wheres, message in (([None], "wheres: 1 filters for 3 queries"),
                                ([None, {"year": {"$gte": "soon"}}, None], "wheres[1].year.$gte")):
            bad = httpx.post(f"{url}/search", json={**body, "wheres": wheres}, timeout=60)
            assert bad.status_code == 422 and message in bad.json()["error"], bad.text
        short = [("where", "year>=2021"), ("where", "lang in en,ko")]
        got = httpx.get(f"{url}/search", params=[("q", "error"), ("k", "100"), *short], timeout=60).json()["hits"]
        assert {h["id"] for h in got} == expected({"year": {"$gte": 2021}, "lang": {"$in": ["en", "ko"]}})
        bad = httpx.get(f"{url}/search", params={"q": "error", "where": "year>=soon"}, timeout=60)
        assert bad.status_code == 422 and bad.json()["error"].startswith("invalid filter at where 'year>=soon'")


def test_the_cli_where_syntax_and_per_line_filters(built, tmp_path):
    runner = CliRunner()

    def ids(*args):
        result = runner.invoke(cli, ["query", "error", "--index", str(built), "-k", "100", "--json", *args])
        assert result.exit_code == 0, result.output
        return {h["id"] for h in json.loads(result.stdout)["hits"]}

    assert ids("--where", "year>=2021", "--where", "lang!=en") == expected(
        {"year": {"$gte": 2021}, "lang": {"$ne": "en"}})
    assert ids("--where", "text~E1234", "--filter", '{"flag": {"$exists": false}}') == expected(
        {"$contains": "E1234", "flag": {"$exists": False}})
    queries = tmp_path / "q.jsonl"
    queries.write_text(json.dumps({"_id": "a", "text": "error", "where": {"lang": {"$in": ["en", "ko"]}}}) + "\n"
                       + json.dumps({"_id": "b", "text": "boat"}) + "\n", encoding="utf-8")
    result = runner.invoke(cli, ["query", "--queries", str(queries), "--index", str(built), "-k", "100",
                                 "--where", "year<2022"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert {h["id"] for h in lines[0]["hits"]} == expected({"lang": {"$in": ["en", "ko"]}, "year": {"$lt": 2022}})
    assert {h["id"] for h in lines[1]["hits"]} == expected({"year": {"$lt": 2022}})
    bad = runner.invoke(cli, ["query", "error", "--index", str(built), "--filter", '{"year": {"$gte": "soon"}}'])
    assert bad.exit_code != 0 and "Traceback" not in bad.output
    assert bad.output.strip().splitlines() == [
        "Error: invalid filter at --filter.year.$gte: a range takes a number or an ISO date such as 2021-06-30, "
        "found the text 'soon'"]


@pytest.mark.parametrize("clause, want", [
    ("lang=en", {"lang": "en"}),
    ("year=2020", {"year": "2020"}),
    ("lang!=en", {"lang": {"$ne": "en"}}),
    ("year>=2021", {"year": {"$gte": 2021}}),
    ("year > 2020.5", {"year": {"$gt": 2020.5}}),
    ("date<2021-06-30", {"date": {"$lt": "2021-06-30"}}),
    ("lang in en,ko", {"lang": {"$in": ["en", "ko"]}}),
    ("lang not in en, ko", {"lang": {"$nin": ["en", "ko"]}}),
    ("archived!=true", {"archived": {"$ne": "true"}}),
    ("text~E1234", {"$contains": "E1234"}),
    ("archived exists", {"archived": {"$exists": True}}),
    ("archived missing", {"archived": {"$exists": False}}),
    ("note=a=b", {"note": "a=b"}),
    ("$.lang=en", {"$.lang": "en"}),
])
def test_the_short_syntax(clause, want):
    assert filter_syntax.clause(clause) == want


@pytest.mark.parametrize("clause, message", [
    ("novalue", "invalid filter at --where 'novalue': expected key=value"),
    ("=en", "no key before '='"),
    ("year>=soon", "a range takes a number or an ISO date"),
    ("lang~en", "~ searches the document text"),
    ("lang in ,", "no values after 'in'"),
])
def test_short_syntax_errors_name_the_clause(clause, message):
    with pytest.raises(FilterError, match=None) as err:
        filter_syntax.clause(clause)
    assert message in str(err.value)


@pytest.mark.parametrize("where, position, problem", [
    ({"$or": [{"a": 1}, {"y": {"$gte": "abc"}}]}, "where.$or[1].y.$gte", "a range takes a number or an ISO date"),
    ({"$bogus": 1}, "where.$bogus", "unknown operator $bogus"),
    ({"a": {"$regex": "x"}}, "where.a.$regex", "unknown operator $regex"),
    ({"a": {"$in": "en"}}, "where.a.$in", "takes a non-empty list"),
    ({"a": {"$in": [[1]]}}, "where.a.$in[0]", "expected text, a number"),
    ({"a": {"$exists": 1}}, "where.a.$exists", "takes true or false"),
    ({"$and": []}, "where.$and", "non-empty list"),
    ({"$not": [1]}, "where.$not", "expected an object"),
    ({"a": {"$contains": "x"}}, "where.a.$contains", "$contains is for the document text"),
    ({"a": float("nan")}, "where.a", "finite"),
    ({"a": 10 ** 20}, "where.a", "64-bit"),
    ({"a": {"$gt": 1, "b": 2}}, "where.a.b", "cannot also hold plain keys"),
    ([1], "where", "expected an object"),
])
def test_a_bad_filter_names_its_position(where, position, problem):
    with pytest.raises(FilterError) as err:
        filter_language.parse(where)
    assert err.value.position == position and problem in err.value.problem


# --- the indexes: kept by every write, looked up not scanned -------------------------------------------
def test_writes_keep_the_filter_indexes_current(tiny_model, tmp_path):
    index, _ = Index.build(tmp_path / "idx", [
        {"id": "a", "text": "error E1234 at boot", "metadata": {"lang": "en", "year": 2020}},
        {"id": "b", "text": "a quiet boat", "metadata": {"lang": "ko", "year": 2022}},
    ], model=tiny_model)
    searcher = Searcher(index)

    def ids(where):
        return sorted(h.id for h in searcher.search("boat", k=10, where=where))

    assert ids({"$contains": "E1234"}) == ["a"] and ids({"year": {"$gte": 2021}}) == ["b"]
    index.add([{"id": "a", "text": "error E1234 at boot", "metadata": {"lang": "en", "year": 2023}}])  # metadata only
    assert ids({"year": {"$gte": 2021}}) == ["a", "b"]
    index.add([{"id": "b", "text": "now about E1234 too", "metadata": {"lang": "ko", "year": 2022}}])  # new text
    assert ids({"$contains": "E1234"}) == ["a", "b"] and ids({"$contains": "boat"}) == []
    index.delete(["a"])
    assert ids({"$contains": "E1234"}) == ["b"] and ids({"lang": "en"}) == []
    with Index.open(index.path) as again:
        rows = again.store.conn.execute("SELECT document_id, key FROM metadata_values ORDER BY 1, 2").fetchall()
    assert rows == [("b", "lang"), ("b", "year")]


def test_a_key_no_document_has_is_one_index_lookup(built):
    with Index.open(built) as index:
        assert filters.passage_ids(index.store.conn, {"nobody": "x"}).tolist() == []
        node = filter_language.parse({"nobody": {"$in": ["x", 1]}, "lang": {"$gte": 2}})
        from index.storage import filter_sql

        sql, params = filter_sql.passage_query(node)
        plan = " | ".join(r[3] for r in index.store.conn.execute("EXPLAIN QUERY PLAN " + sql, params))
    assert "USING" in plan and "SCAN documents" not in plan and "SCAN metadata_values" not in plan, plan
    assert Searcher(built).search("error", k=5, where={"nobody": {"$exists": True}}) == []


def test_ten_thousand_in_values(built):
    wanted = [f"v{i}" for i in range(10_000)] + ["en", 2021]
    hits = Searcher(built).search("error", k=100, where={"lang": {"$in": wanted}, "year": {"$nin": wanted}})
    assert {h.id for h in hits} == expected({"lang": {"$in": wanted}, "year": {"$nin": wanted}})
    assert hits


def test_a_migrated_legacy_database_answers_old_filters_as_the_scan_did(tmp_path):
    from pathlib import Path
    import shutil

    legacy = Path(__file__).resolve().parent / "fixtures" / "legacy" / "flat" / "semsearch.db"
    shutil.copy(legacy, tmp_path / "semsearch.db")
    (tmp_path / "old").mkdir()
    shutil.copy(legacy, tmp_path / "old" / "semsearch.db")
    old = sqlite3.connect(tmp_path / "old" / "semsearch.db")  # a copy left as that code wrote it, not migrated
    pairs = {(k, v) for (meta,) in old.execute("SELECT metadata FROM documents") for k, v in json.loads(meta).items()}
    wheres = [{k: v} for k, v in pairs] + [{"topic": "account", "answer": "nope"}, {"topic": "nowhere"}, {}]
    before = [sorted(filters.legacy_passage_ids(old, w).tolist()) for w in wheres]
    store = MetadataStore.connect(tmp_path)  # migrates to the current schema
    try:
        assert store.schema_version() == 2
        names = [r[0] for r in store.conn.execute("SELECT name FROM migrations ORDER BY version")]
        assert names == ["_m001_initial", "m002_metadata_values"]
        after = [sorted(filters.passage_ids(store.conn, w).tolist()) for w in wheres]
    finally:
        store.close()
    assert after == before and any(before)


def test_an_approximate_index_still_returns_k_hits_when_k_documents_match(tiny_model, tmp_path):
    from search import planner

    docs = [{"id": f"d{i:03d}", "text": f"{WORDS[i % len(WORDS)]} item {i}", "metadata": {"n": i}}
            for i in range(300)]
    index, _ = Index.build(tmp_path / "ivf", docs, model=tiny_model, index_type="ivf")
    searcher = Searcher(index, nprobe=1)
    where = {"n": {"$in": list(range(0, 300, 7))}}  # 43 documents in many lists
    assert len(searcher.search("item", k=40, where=where)) == 40
    saved = planner.EXACT_MAX
    planner.EXACT_MAX = 0  # force the ANN path: the fallback scores exactly when the index misses
    try:
        hits = searcher.search("item", k=40, where=where)
    finally:
        planner.EXACT_MAX = saved
    assert len(hits) == 40 and all(int(h.id[1:]) % 7 == 0 for h in hits)
    exact_ids = [h.id for h in Searcher(index).search("item", k=40, where=where)]
    assert [h.id for h in hits] == exact_ids
    assert math.isfinite(hits[0].score)


def test_hybrid_and_bm25_sides_and_shards_take_the_language(tiny_model, tmp_path):
    pytest.importorskip("bm25s", reason="hybrid retrieval needs bm25s (pip install 'semsearch[hybrid]')")
    from index.distributed.shards import ShardedIndex
    from search.sharded import ShardedSearcher

    where = {"$or": [{"year": {"$gte": 2021}}, {"$contains": "E1234"}], "lang": {"$ne": "ko"}}
    want = expected(where)
    hybrid, _ = Index.build(tmp_path / "hybrid", DOCS, model=tiny_model, hybrid=True)
    searcher = Searcher(hybrid)
    assert {h.id for h in searcher.search("error E1234", k=100, where=where, hybrid=True)} == want
    bm25 = searcher.search_bm25(["error E1234 refund boat"], k=100, where=where)[0]
    assert bm25 and {h.id for h in bm25} <= want
    assert {h.id for h in bm25} == {h.id for h in searcher.search_bm25(["error E1234 refund boat"], k=100)[0]} & want
    sharded, _ = ShardedIndex.build(tmp_path / "sharded", DOCS, shards=3, model=tiny_model)
    assert {h.id for h in ShardedSearcher(sharded).search("error", k=100, where=where)} == want
    with pytest.raises(FilterError):
        ShardedSearcher(sharded).search("error", k=5, where={"year": {"$gte": "soon"}})


def test_eval_runs_each_query_with_its_own_filter_and_the_common_one(tmp_path):
    from search.evaluation import evaluate_index, plan_evaluation

    queries = tmp_path / "queries.jsonl"
    queries.write_text("\n".join(json.dumps(q) for q in [
        {"_id": "a", "text": "one", "where": {"lang": "en"}},
        {"_id": "b", "text": "two"},
        {"_id": "c", "text": "three", "where": {"lang": "en"}},
    ]) + "\n", encoding="utf-8")
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\na\td1\t1\nb\td1\t1\nc\td1\t1\n", encoding="utf-8")
    calls = []

    class Recorder:
        def search_many(self, texts, k, where=None):
            calls.append((list(texts), where))
            return [[] for _ in texts]

    evaluate_index(Recorder(), plan_evaluation(queries, qrels), where={"year": {"$gte": 2021}})
    assert sorted(calls, key=str) == sorted([
        (["one", "three"], {"$and": [{"year": {"$gte": 2021}}, {"lang": "en"}]}),
        (["two"], {"year": {"$gte": 2021}}),
    ], key=str)
    queries.write_text(json.dumps({"_id": "a", "text": "one", "where": {"lang": {"$bad": 1}}}) + "\n", encoding="utf-8")
    with pytest.raises(Exception, match=r"queries.jsonl:1: query 'a': invalid filter at where.lang.\$bad"):
        plan_evaluation(queries, qrels)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf", "ivfpq", "ivf-disk"])
def test_every_index_type_searches_with_the_allowed_ids(tiny_model, tmp_path, monkeypatch, kind):
    from search import planner

    index, _ = Index.build(tmp_path / kind, DOCS, model=tiny_model, index_type=kind)
    where = {"$or": [{"lang": {"$exists": True}}, {"year": {"$gte": 2021}}]}
    want = expected(where)
    assert 10 < len(want) < len(DOCS)
    exact = Searcher(index).search("error number", k=10, where=where)  # a few passages: scored exactly
    monkeypatch.setattr(planner, "EXACT_MAX", 0)  # the ANN index with the cached (read-only) ids as selector
    hits = Searcher(index).search("error number", k=10, where=where)
    assert len(hits) == 10 and {h.id for h in hits} <= want
    assert {h.id for h in Searcher(index).search("error number", k=100, where=where)} == want
    if kind == "flat":  # both exact: the same ranking
        assert [h.id for h in exact] == [h.id for h in hits]


def test_query_through_a_server_takes_filters_and_per_line_filters(built, tmp_path):
    queries = tmp_path / "q.jsonl"
    queries.write_text(json.dumps({"_id": "a", "text": "error", "where": {"year": {"$gte": 2021}}}) + "\n"
                       + json.dumps({"_id": "b", "text": "boat"}) + "\n", encoding="utf-8")
    runner = CliRunner()
    with serving(built) as (url, _):
        ready(url)
        one = runner.invoke(cli, ["query", "error", "--server", url, "-k", "100", "--json",
                                  "--where", "lang!=en", "--where", "text~E1234"])
        assert one.exit_code == 0, one.output
        assert {h["id"] for h in json.loads(one.stdout)["hits"]} == expected(
            {"lang": {"$ne": "en"}, "$contains": "E1234"})
        many = runner.invoke(cli, ["query", "--queries", str(queries), "--server", url, "-k", "100",
                                   "--filter", '{"flag": {"$exists": true}}'])
        assert many.exit_code == 0, many.output
        a, b = [json.loads(line) for line in many.stdout.splitlines()]
        assert {h["id"] for h in a["hits"]} == expected({"flag": {"$exists": True}, "year": {"$gte": 2021}})
        assert {h["id"] for h in b["hits"]} == expected({"flag": {"$exists": True}})


def test_check_finds_a_damaged_filter_index_and_repair_refills_it(tiny_model, tmp_path):
    index, _ = Index.build(tmp_path / "idx", DOCS, model=tiny_model)
    where = {"year": {"$gte": 2021}}
    assert {h.id for h in Searcher(index).search("error", k=100, where=where)} == expected(where)
    with index.store.transaction():
        index.store.conn.execute("DELETE FROM metadata_values WHERE key = 'year'")
    report = index.check(sample=2)
    assert not report.ok and any("metadata filter index" in p for p in report.problems)
    actions = index.repair().actions
    assert any(a.startswith("rebuilt the metadata filter indexes") for a in actions)
    assert index.check(sample=2).ok
    assert {h.id for h in Searcher(index).search("error", k=100, where=where)} == expected(where)
    assert {h.id for h in Searcher(index).search("error", k=100, where={"$contains": "E1234"})} == expected(
        {"$contains": "E1234"})


def test_a_flat_index_scores_ids_from_memory_exactly():
    from index.ann.flat import FlatIndex

    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((300, 8)).astype(np.float32)
    ids = rng.permutation(np.arange(1000, 1300))  # added out of order
    index = FlatIndex.empty(8)
    index.add(ids[:200], vectors[:200])
    query = rng.standard_normal(8).astype(np.float32)
    asked = np.array([ids[5], 999_999, ids[150], ids[250], ids[0]])  # one unknown, one not added yet
    held, scores = index.score_ids(query, asked)
    assert held.tolist() == [ids[5], ids[150], ids[0]]
    assert np.allclose(scores, vectors[[5, 150, 0]] @ query, atol=1e-5)
    index.add(ids[200:], vectors[200:])  # a write forgets the cached positions
    index.remove([ids[5]])
    held, scores = index.score_ids(query, asked)
    assert held.tolist() == [ids[150], ids[250], ids[0]]
    assert np.allclose(scores, vectors[[150, 250, 0]] @ query, atol=1e-5)


def test_an_ivf_index_scores_ids_exactly_and_still_removes_and_saves_plainly(tmp_path):
    from index.ann.ivf import IVFIndex

    rng = np.random.default_rng(4)
    vectors = rng.standard_normal((400, 8)).astype(np.float32)
    ids = rng.permutation(np.arange(5000, 5400))
    index = IVFIndex.build(8, 300, lambda: iter([(ids[:300], vectors[:300])]))
    plain = index.save(tmp_path / "plain.faiss").read_bytes()
    query = rng.standard_normal(8).astype(np.float32)
    asked = np.array([ids[7], 1, ids[299], ids[350], ids[0]])  # one unknown, one not added yet
    held, scores = index.score_ids(query, asked)
    assert held.tolist() == [ids[7], ids[299], ids[0]]
    assert np.allclose(scores, vectors[[7, 299, 0]] @ query, atol=1e-5)
    # the direct map the gather made is dropped before a save (same bytes) and before writes
    assert index.save(tmp_path / "again.faiss").read_bytes() == plain
    index.score_ids(query, asked)
    assert index.remove([ids[7]]) == 1  # FAISS refuses a batch removal while a hash map is kept
    index.add(ids[300:], vectors[300:])
    held, scores = index.score_ids(query, asked)
    assert held.tolist() == [ids[299], ids[350], ids[0]]
    assert np.allclose(scores, vectors[[299, 350, 0]] @ query, atol=1e-5)


def test_the_planner_gathers_on_ivf_where_a_search_would_scan_more(tiny_model, tmp_path, monkeypatch):
    from index.ann import ivf

    docs = [{"id": f"d{i}", "text": f"passage {i} about {['boats', 'errors', 'banks'][i % 3]}",
             "metadata": {"cat": f"c{i % 10}"}} for i in range(700)]
    flat, _ = Index.build(tmp_path / "flat", docs, model=tiny_model, index_type="flat")
    index, _ = Index.build(tmp_path / "ivf", docs, model=tiny_model, index_type="ivf")
    where = {"cat": "c3"}  # 70 documents
    with index.snapshot() as snap:
        assert snap.vectors.kind == "ivf"
        monkeypatch.setattr(ivf, "GATHER_COST", 1)  # gathering allowed up to what the probed lists hold
        assert 70 <= snap.vectors.exact_limit(snap.settings(None))
    calls, score_ids = [], ivf.IVFIndex.score_ids

    def recorded(self, query, allowed):
        calls.append(len(allowed))
        return score_ids(self, query, allowed)

    monkeypatch.setattr(ivf.IVFIndex, "score_ids", recorded)
    hits = Searcher(index).search("errors", k=10, where=where)
    assert calls == [70]
    assert [(h.id, round(h.score, 5)) for h in hits] == [
        (h.id, round(h.score, 5)) for h in Searcher(flat).search("errors", k=10, where=where)]
