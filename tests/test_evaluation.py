"""Tests for search.evaluation: metrics, loaders, spearman and the table."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import require

from index.errors import InputError, SemsearchError
from search.evaluation import (
    EvalQuery,
    EvalResult,
    evaluate,
    format_table,
    load_qrels,
    load_queries,
    spearman,
)

INV_LOG2_3 = 0.6309297535714575  # 1 / log2(3): the discount at rank 2


def approx(value: float):
    return pytest.approx(value, abs=1e-12)


# --------------------------------------------------------------------------
# evaluate
# --------------------------------------------------------------------------


def test_perfect_ranking_scores_one():
    qrels = {"q1": {"d1": 1, "d2": 1}}
    result = evaluate({"q1": ["d1", "d2", "x"]}, qrels)
    assert result.queries == 1
    assert result.ndcg_at_10 == approx(1.0)
    assert result.mrr_at_10 == approx(1.0)
    assert result.recall == {1: approx(0.5), 5: approx(1.0), 10: approx(1.0), 100: approx(1.0)}


def test_relevant_doc_at_rank_two():
    result = evaluate({"q1": ["x", "d1", "y"]}, {"q1": {"d1": 1}})
    assert 1 / math.log2(3) == approx(INV_LOG2_3)
    assert result.ndcg_at_10 == approx(INV_LOG2_3)
    assert result.mrr_at_10 == approx(0.5)
    assert result.recall == {1: 0.0, 5: 1.0, 10: 1.0, 100: 1.0}


def test_graded_relevance_uses_linear_gain():
    # DCG  = 1/1 + 2/log2(3)          (b has grade 1 at rank 1, a grade 2 at rank 2)
    # IDCG = 2/1 + 1/log2(3)
    qrels = {"q1": {"a": 2, "b": 1, "c": 0}}
    result = evaluate({"q1": ["b", "a", "c"]}, qrels)
    assert result.ndcg_at_10 == approx(0.8597186998521972)
    assert result.mrr_at_10 == approx(1.0)
    assert result.recall[1] == approx(0.5)
    assert result.recall[5] == approx(1.0)


def test_ideal_dcg_includes_judged_docs_not_retrieved():
    # DCG = 1 (grade-1 doc at rank 1); IDCG = 3 + 2/log2(3) + 1/log2(4)
    qrels = {"q1": {"a": 3, "b": 2, "c": 1}}
    result = evaluate({"q1": ["c", "x"]}, qrels)
    assert result.ndcg_at_10 == approx(0.21000199575396408)
    assert result.mrr_at_10 == approx(1.0)
    assert result.recall[100] == approx(1 / 3)


def test_unjudged_and_zero_judged_docs_have_no_gain():
    qrels = {"q1": {"d1": 1, "z": 0}}
    result = evaluate({"q1": ["z", "d1"]}, qrels)
    assert result.ndcg_at_10 == approx(INV_LOG2_3)
    assert result.mrr_at_10 == approx(0.5)


def test_cutoffs_at_ten():
    ranking = [f"x{i}" for i in range(10)] + ["d1"]  # relevant doc at rank 11
    result = evaluate({"q1": ranking}, {"q1": {"d1": 1}})
    assert result.ndcg_at_10 == 0.0
    assert result.mrr_at_10 == 0.0
    assert result.recall == {1: 0.0, 5: 0.0, 10: 0.0, 100: 1.0}


def test_ideal_dcg_is_cut_at_ten():
    # 12 relevant docs; the top 10 are all relevant, so nDCG@10 is exactly 1
    docs = [f"d{i}" for i in range(12)]
    result = evaluate({"q1": docs[:10]}, {"q1": {d: 1 for d in docs}})
    assert result.ndcg_at_10 == approx(1.0)
    assert result.recall[10] == approx(10 / 12)
    assert result.recall[1] == approx(1 / 12)


def test_recall_with_several_relevant_docs():
    qrels = {"q1": {"a": 1, "b": 2, "c": 1, "d": 1}}
    result = evaluate({"q1": ["a", "x", "b", "y", "z", "c"]}, qrels)
    assert result.recall == {1: 0.25, 5: 0.5, 10: 0.75, 100: 0.75}
    assert result.mrr_at_10 == approx(1.0)


def test_query_missing_from_run_counts_as_empty():
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}}
    result = evaluate({"q1": ["d1"]}, qrels)
    assert result.queries == 2
    assert result.ndcg_at_10 == approx(0.5)
    assert result.mrr_at_10 == approx(0.5)
    assert result.recall == {1: 0.5, 5: 0.5, 10: 0.5, 100: 0.5}


def test_queries_with_only_zero_judgements_are_not_counted():
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 0, "d3": 0}, "q3": {}}
    run = {"q1": ["d1"], "q2": ["x"], "q3": ["y"], "not-judged": ["z"]}
    result = evaluate(run, qrels)
    assert result.queries == 1
    assert result.ndcg_at_10 == approx(1.0)
    assert result.mrr_at_10 == approx(1.0)


def test_no_evaluable_queries_gives_zeros():
    result = evaluate({"q1": ["a"]}, {"q1": {"a": 0}})
    assert result.queries == 0
    assert result.ndcg_at_10 == 0.0
    assert result.mrr_at_10 == 0.0
    assert result.recall == {1: 0.0, 5: 0.0, 10: 0.0, 100: 0.0}


def test_duplicates_in_ranking_count_once():
    # [x, x, x, d1] is read as [x, d1]: d1 is at rank 2
    result = evaluate({"q1": ["x", "x", "x", "d1"]}, {"q1": {"d1": 1}})
    assert result.ndcg_at_10 == approx(INV_LOG2_3)
    assert result.mrr_at_10 == approx(0.5)
    assert result.recall[1] == 0.0
    # a repeated relevant doc earns its gain and its recall once
    # DCG = 1, IDCG = 1 + 1/log2(3)
    result = evaluate({"q1": ["d1", "d1", "d1"]}, {"q1": {"d1": 1, "d2": 1}})
    assert result.ndcg_at_10 == approx(0.6131471927654584)
    assert result.recall[5] == approx(0.5)


def test_averages_are_plain_means():
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}, "q3": {"a": 1, "b": 1}}
    run = {"q1": ["d1"], "q2": ["x", "d2"], "q3": ["a"]}
    # nDCG: 1, 1/log2(3), 1/(1 + 1/log2(3));  MRR: 1, 0.5, 1
    result = evaluate(run, qrels)
    assert result.queries == 3
    assert result.ndcg_at_10 == approx((1 + INV_LOG2_3 + 0.6131471927654584) / 3)
    assert result.mrr_at_10 == approx(2.5 / 3)
    assert result.recall[1] == approx(1.5 / 3)
    assert result.recall[5] == approx(2.5 / 3)


def test_custom_ks_and_as_dict():
    result = evaluate({"q1": ["x", "d1"]}, {"q1": {"d1": 1}}, ks=(3, 1))
    assert result.recall == {1: 0.0, 3: 1.0}
    assert result.as_dict() == {
        "queries": 1,
        "ndcg@10": approx(INV_LOG2_3),
        "mrr@10": 0.5,
        "recall@1": 0.0,
        "recall@3": 1.0,
    }
    assert list(result.as_dict()) == ["queries", "ndcg@10", "mrr@10", "recall@1", "recall@3"]


def test_default_as_dict_keys():
    result = evaluate({"q1": ["d1"]}, {"q1": {"d1": 1}})
    assert result.as_dict() == {
        "queries": 1,
        "ndcg@10": 1.0,
        "mrr@10": 1.0,
        "recall@1": 1.0,
        "recall@5": 1.0,
        "recall@10": 1.0,
        "recall@100": 1.0,
    }


@pytest.mark.parametrize("ks", [(0,), (1, -5), (2.5,)])
def test_bad_ks_rejected(ks):
    with pytest.raises(ValueError, match="ks must be positive integers"):
        evaluate({}, {"q1": {"d1": 1}}, ks=ks)


# --------------------------------------------------------------------------
# spearman
# --------------------------------------------------------------------------


def test_spearman_hand_examples():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == approx(-1.0)
    # ranks of x with a tie: [1, 2.5, 2.5, 4] against [1, 2, 3, 4] -> 4.5 / sqrt(4.5 * 5)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == approx(0.9486832980505138)
    assert spearman([0.1, 0.9, 0.5], [1, 3, 2]) == approx(1.0)


def test_spearman_degenerate_inputs():
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    assert math.isnan(spearman([1], [2]))
    assert math.isnan(spearman([1, float("nan"), 3], [1, 2, 3]))
    with pytest.raises(ValueError, match="differ in length"):
        spearman([1, 2, 3], [1, 2])


@pytest.mark.parametrize("seed", range(5))
def test_spearman_matches_scipy_with_ties(seed):
    stats = require("scipy.stats", "SciPy is not installed")
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 6, size=60).astype(float)  # many ties
    y = x + rng.integers(0, 4, size=60)  # correlated, with ties too
    z = rng.normal(size=60).round(1)  # a few ties
    for a, b in [(x, y), (x, z), (y, z), (z, z[::-1])]:
        expected = stats.spearmanr(a, b).statistic
        assert spearman(a, b) == pytest.approx(expected, abs=1e-12)
        assert spearman(list(a), list(b)) == pytest.approx(expected, abs=1e-12)


# --------------------------------------------------------------------------
# format_table
# --------------------------------------------------------------------------


def test_format_table():
    perfect = EvalResult(queries=2, ndcg_at_10=1.0, mrr_at_10=1.0,
                         recall={1: 1.0, 5: 1.0, 10: 1.0, 100: 1.0})
    half = evaluate({"q1": ["x", "d1"]}, {"q1": {"d1": 1}})
    table = format_table([("bm25", half), ("minilm-l6", perfect)])
    assert table == (
        "run        queries  nDCG@10  MRR@10     R@1     R@5    R@10   R@100\n"
        "bm25             1   0.6309  0.5000  0.0000  1.0000  1.0000  1.0000\n"
        "minilm-l6        2   1.0000  1.0000  1.0000  1.0000  1.0000  1.0000"
    )
    assert table.splitlines()[0].split() == [
        "run", "queries", "nDCG@10", "MRR@10", "R@1", "R@5", "R@10", "R@100"
    ]


def test_format_table_no_rows_is_header_only():
    assert format_table([]).split() == [
        "run", "queries", "nDCG@10", "MRR@10", "R@1", "R@5", "R@10", "R@100"
    ]


# --------------------------------------------------------------------------
# load_queries
# --------------------------------------------------------------------------


def test_load_queries(tmp_path):
    path = tmp_path / "queries.jsonl"
    path.write_text(
        '{"_id": "q1", "text": "what is caf\\u0065\\u0301?", "metadata": {}}\n'
        "\n"
        '{"id": 7, "text": "seven"}\n'
        "   \n"
        '{"_id": 12, "id": "ignored", "text": ""}\n',
        encoding="utf-8",
    )
    queries = load_queries(path)
    assert queries == [
        EvalQuery(id="q1", text="what is caf\u00e9?"),
        EvalQuery(id="7", text="seven"),
        EvalQuery(id="12", text=""),
    ]
    assert len(queries[0].text) == 13  # NFC: e + combining acute -> one char (not 14)


def test_load_queries_utf8_bom_and_crlf(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"_id": "a", "text": "x"}\r\n{"_id": "b", "text": "y"}\r\n')
    assert load_queries(str(path)) == [EvalQuery("a", "x"), EvalQuery("b", "y")]


@pytest.mark.parametrize(
    ("lines", "line_no", "fragment"),
    [
        (['{"_id": "q1", "text": "a"}', "", '{"_id": "q2", "text": '], 3, "invalid JSON"),
        (['{"_id": "q1", "text": "a"}', '["q2", "b"]'], 2, "expected a JSON object"),
        (['{"text": "a"}'], 1, "missing query id"),
        (['{"_id": "", "text": "a"}'], 1, "non-empty string or an integer"),
        (['{"_id": null, "text": "a"}'], 1, "non-empty string or an integer"),
        (['{"_id": "q1", "text": "a"}', '{"_id": "q2"}'], 2, 'no string "text"'),
        (['{"_id": "q1", "text": 5}'], 1, 'no string "text"'),
        (['{"_id": "q1", "text": "a"}', '{"_id": "q1", "text": "b"}'], 2, "duplicate query id"),
    ],
)
def test_load_queries_errors(tmp_path, lines, line_no, fragment):
    path = tmp_path / "bad-queries.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(InputError) as info:
        load_queries(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line_no}: ")
    assert "bad-queries.jsonl" in message
    assert fragment in message
    assert "\n" not in message
    assert isinstance(info.value, SemsearchError)


def test_load_queries_bad_utf8(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"_id": "q1", "text": "a"}\n{"_id": "q2", "text": "caf\xe9"}\n')
    with pytest.raises(InputError, match=r"latin1\.jsonl:2: not valid UTF-8"):
        load_queries(path)


def test_load_queries_missing_file(tmp_path):
    path = tmp_path / "nope.jsonl"
    with pytest.raises(InputError) as info:
        load_queries(path)
    assert str(info.value).startswith(f"{path}: cannot read file")


# --------------------------------------------------------------------------
# load_qrels
# --------------------------------------------------------------------------


def test_load_qrels_with_header(tmp_path):
    path = tmp_path / "test.tsv"
    path.write_text(
        "query-id\tcorpus-id\tscore\n"
        "q1\td1\t1\n"
        "q1\td2\t2\n"
        "\n"
        "q2\td3\t0\n"
        "q2\td4\t-1\n"
        "3\t10\t1\n",
        encoding="utf-8",
    )
    assert load_qrels(path) == {
        "q1": {"d1": 1, "d2": 2},
        "q2": {"d3": 0, "d4": 0},
        "3": {"10": 1},
    }


def test_load_qrels_without_header(tmp_path):
    path = tmp_path / "test.tsv"
    path.write_text("q1\td1\t1\r\nq1\td1\t1\r\nq2\td2\t+3\r\n", encoding="utf-8")
    assert load_qrels(path) == {"q1": {"d1": 1}, "q2": {"d2": 3}}


def test_loaded_files_evaluate_end_to_end(tmp_path):
    qrels_path = tmp_path / "qrels.tsv"
    qrels_path.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td9\t0\n")
    queries_path = tmp_path / "queries.jsonl"
    queries_path.write_text('{"_id": "q1", "text": "a"}\n{"_id": "q2", "text": "b"}\n')
    queries = load_queries(queries_path)
    run = {q.id: ["x", "d1"] for q in queries}
    result = evaluate(run, load_qrels(qrels_path))
    assert result.queries == 1
    assert result.mrr_at_10 == approx(0.5)
    assert result.ndcg_at_10 == approx(INV_LOG2_3)


@pytest.mark.parametrize(
    ("text", "line_no", "fragment"),
    [
        ("query-id\tcorpus-id\tscore\nq1\td1\n", 2, "expected 3 tab-separated fields"),
        ("q1\td1\t1\nq1 d2 1\n", 2, "got 1"),
        ("q1\td1\t1\nq1\td2\t1\textra\n", 2, "got 4"),
        ("query-id\tcorpus-id\tscore\nq1\td1\t1\n\nq1\td2\tyes\n", 4, "is not an integer"),
        ("q1\td1\t1\nq1\td2\t0.5\n", 2, "is not an integer"),
        ("q1\td1\t1\n\td2\t1\n", 2, "empty query id or corpus id"),
        ("q1\td1\t1\nq1\td1\t2\n", 2, "conflicting score 2"),
    ],
)
def test_load_qrels_errors(tmp_path, text, line_no, fragment):
    path = tmp_path / "bad-qrels.tsv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as info:
        load_qrels(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line_no}: ")
    assert "bad-qrels.tsv" in message
    assert fragment in message
    assert "\n" not in message


def test_load_qrels_missing_file(tmp_path):
    path = tmp_path / "missing.tsv"
    with pytest.raises(InputError, match=r"missing\.tsv: cannot read file"):
        load_qrels(path)
