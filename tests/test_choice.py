"""The choice behind ``--backend auto``: rules a noisy measurement cannot flip, bulk and query paths.

``choice.decide`` is tested on injected timings (no clock); the cache on the tiny
BERT with a cache of each test's own; the two paths' agreement on the tiny
BERT (a forced choice) and, as an integration test, on the embedded model with
whatever this machine chooses.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from index import Index
from index.model import auto, model_cache
from index.model import choice as rules
from index.model import precision as policy
from index.model.encoder import QUERY_TEXTS, Encoder
from index.model.measure import measure, workload_texts

ROOT = Path(__file__).resolve().parents[1]
ALL = [rules.TORCH_BF16, rules.TORCH_FP32, rules.ONNX_FP32]
TEXTS = ["how do i reset my password", "the bank of the river", "a", "배를 타고 바다로 갔다",
         "the quick brown fox jumps over the lazy dog " * 3, "interest rates rose again", "we sat by the river"]


def timings(**per_candidate: tuple[list[float], list[float]]) -> rules.Timings:
    """``name_with_underscores=(long seconds per round, short seconds per round)``."""
    t = rules.Timings()
    for key, (long, short) in per_candidate.items():
        name = key.replace("_", " ")
        for a, b in zip(long, short):
            t.add(name, "long", a)
            t.add(name, "short", b)
            t.add(name, "query", 0.005)
    return t


# --- the decision: a pure function of the measurements --------------------------------------------------
def test_bf16_stays_the_bulk_choice_unless_clearly_beaten_in_every_round():
    # The Zen 4 case of issue 20: ONNX a little faster in some rounds (the noise that flipped the old probe).
    noisy = timings(torch_bf16=([0.30, 0.40, 0.31], [0.10, 0.16, 0.11]),
                    torch_fp32=([0.60, 0.62, 0.61], [0.15, 0.15, 0.16]),
                    onnx_fp32=([0.33, 0.29, 0.45], [0.09, 0.12, 0.14]))
    choices = {rules.decide(noisy, ALL) for _ in range(5)}
    assert len(choices) == 1
    (chosen,) = choices
    assert (chosen.bulk, chosen.query) == (rules.TORCH_BF16, rules.ONNX_FP32)
    assert "bf16 instructions" in chosen.bulk_reason


def test_a_candidate_faster_by_the_margin_in_every_round_overturns_the_rule():
    clear = timings(torch_bf16=([1.0, 1.1, 1.0], [0.30, 0.31, 0.30]),
                    torch_fp32=([1.2, 1.2, 1.2], [0.35, 0.35, 0.35]),
                    onnx_fp32=([0.7, 0.75, 0.7], [0.20, 0.21, 0.20]))
    assert rules.decide(clear, ALL).bulk == rules.ONNX_FP32
    # the same, but one round of one workload within the margin: the rule stands
    close = timings(torch_bf16=([1.0, 1.1, 1.0], [0.30, 0.31, 0.30]),
                    torch_fp32=([1.2, 1.2, 1.2], [0.35, 0.35, 0.35]),
                    onnx_fp32=([0.7, 0.75, 0.7], [0.20, 0.29, 0.20]))
    assert rules.decide(close, ALL).bulk == rules.TORCH_BF16
    # faster on short texts only (per-call overhead) does not make a bulk winner
    short_only = timings(torch_bf16=([1.0, 1.0, 1.0], [0.30, 0.30, 0.30]),
                         torch_fp32=([1.9, 1.9, 1.9], [0.35, 0.35, 0.35]),
                         onnx_fp32=([1.5, 1.5, 1.5], [0.10, 0.10, 0.10]))
    assert rules.decide(short_only, ALL).bulk == rules.TORCH_BF16


def test_without_bf16_onnx_fp32_is_the_rule_and_avx2_keeps_it():
    fp32 = [rules.TORCH_FP32, rules.ONNX_FP32]
    zen3 = timings(torch_fp32=([1.45, 1.40, 1.50], [0.35, 0.36, 0.34]),
                   onnx_fp32=([1.00, 1.05, 0.98], [0.27, 0.28, 0.27]))
    assert (rules.decide(zen3, fp32).bulk, rules.decide(zen3, fp32).query) == (rules.ONNX_FP32, rules.ONNX_FP32)
    torch_far_ahead = timings(torch_fp32=([0.5, 0.5, 0.5], [0.1, 0.1, 0.1]),
                              onnx_fp32=([1.0, 1.0, 1.0], [0.2, 0.2, 0.2]))
    torch_ahead = rules.decide(torch_far_ahead, fp32)
    assert (torch_ahead.bulk, torch_ahead.query) == (rules.TORCH_FP32, rules.ONNX_FP32)


def test_without_a_graph_queries_follow_the_bulk_choice():
    chosen = rules.decide(rules.Timings(), [rules.TORCH_BF16, rules.TORCH_FP32])
    assert (chosen.bulk, chosen.query) == (rules.TORCH_BF16, rules.TORCH_BF16)
    assert rules.decide(rules.Timings(), [rules.TORCH_FP32]).query == rules.TORCH_FP32


def test_the_candidates_follow_the_request_and_the_cpu():
    assert rules.candidates("auto", True, True) == ALL
    assert rules.candidates("auto", False, True) == [rules.TORCH_FP32, rules.ONNX_FP32]
    assert rules.candidates("fp32", True, True) == [rules.TORCH_FP32, rules.ONNX_FP32]
    assert rules.candidates("bf16", True, False) == [rules.TORCH_BF16]


def test_the_measurement_interleaves_the_candidates_and_rotates_their_order():
    calls: list[str] = []
    ticks = iter(range(10_000))

    def candidate(name):
        def encode(texts):
            calls.append(name)
        return encode

    result = measure({n: candidate(n) for n in ("a", "b", "c")}, rounds=3, clock=lambda: float(next(ticks)))
    firsts = [calls[6 + r * 3 * (2 + len(workload_texts()["query"]))] for r in range(3)]  # after the warm-up
    assert firsts == ["a", "b", "c"]
    assert all(len(result.seconds[n][w]) == 3 for n in "abc" for w in rules.WORKLOADS)


# --- the cached choice ------------------------------------------------------------------------------------
def test_a_stored_choice_is_reused_only_for_this_cpu_candidates_and_rules():
    chosen = rules.Choice(bulk=rules.TORCH_FP32, query=rules.ONNX_FP32, bulk_reason="r", query_reason="q")
    fp32 = [rules.TORCH_FP32, rules.ONNX_FP32]
    stored = rules.record(chosen, rules.Timings(), "cpu-a", fp32, fp32)
    assert rules.reusable(stored, "cpu-a", fp32) == chosen
    assert rules.reusable(stored, "cpu-b", fp32) is None  # another CPU
    assert rules.reusable(stored, "cpu-a", ALL) is None  # another candidate set
    assert rules.reusable({**stored, "version": rules.CHOICE_VERSION - 1}, "cpu-a", fp32) is None
    assert rules.reusable({**stored, "bulk": "onnx int8"}, "cpu-a", fp32) is None
    assert rules.reusable(None, "cpu-a", fp32) is None


def counting_measure(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = auto.measure

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **{**kwargs, "rounds": 1})

    monkeypatch.setattr(auto, "measure", counted)
    return calls


def test_a_choice_cached_on_another_cpu_or_for_other_candidates_is_measured_again(tiny_model, isolated_cache,
                                                                                   monkeypatch):
    calls = counting_measure(monkeypatch)
    Encoder.load(tiny_model, precision="fp32", backend="auto")
    assert len(calls) == 1
    (stored,) = (isolated_cache / "choices").glob("*.json")
    record = json.loads(stored.read_text())
    assert record["cpu"] == auto.this_cpu() and record["candidates"] == [rules.TORCH_FP32, rules.ONNX_FP32]

    Encoder.clear_cache()
    Encoder.load(tiny_model, precision="fp32", backend="auto")
    assert len(calls) == 1  # the same CPU and candidates: reused

    stored.write_text(json.dumps({**record, "cpu": "another-cpu", "bulk": rules.TORCH_FP32}))
    Encoder.clear_cache()
    Encoder.load(tiny_model, precision="fp32", backend="auto")
    assert len(calls) == 2  # a record made on another CPU (a copied cache) is not trusted
    assert json.loads(stored.read_text())["cpu"] == auto.this_cpu()

    stored.write_text(json.dumps({**record, "candidates": [rules.TORCH_FP32]}))
    Encoder.clear_cache()
    Encoder.load(tiny_model, precision="fp32", backend="auto")
    assert len(calls) == 3  # made for another candidate set

    Encoder.clear_cache()
    monkeypatch.setattr(policy, "cpu_supports_bf16", lambda: True)  # auto precision now weighs bf16 too
    request = auto.EncoderConfig.for_model(tiny_model, precision="auto", backend="auto")
    names = auto.candidate_names(request, tiny_model)
    assert names == ALL
    fingerprint = model_cache.known_fingerprint(tiny_model)
    fp32_key = auto.choice_key(fingerprint, auto.EncoderConfig.for_model(tiny_model, precision="fp32"), tiny_model,
                               [rules.TORCH_FP32, rules.ONNX_FP32])
    assert auto.choice_key(fingerprint, request, tiny_model, names) != fp32_key


# --- bulk and query paths ----------------------------------------------------------------------------
@pytest.fixture
def torch_bulk_onnx_queries(monkeypatch):
    """Whatever the timings, bulk on torch fp32 and queries on the ONNX graph."""
    forced = rules.Choice(bulk=rules.TORCH_FP32, query=rules.ONNX_FP32, bulk_reason="forced", query_reason="forced")
    monkeypatch.setattr(auto.rules, "decide", lambda timings, available: forced)
    monkeypatch.setattr(auto, "measure", lambda *a, **k: rules.Timings())


def test_bulk_and_query_runners_agree_and_neither_loads_the_other(
        tiny_model, isolated_cache, torch_bulk_onnx_queries):
    enc = Encoder.load(tiny_model, precision="fp32", backend="auto")
    assert (enc.backend, enc.precision, enc.query_backend, enc.query_precision) == ("torch", "fp32", "onnx", "fp32")
    Encoder.clear_cache()
    cold = Encoder.load(tiny_model, precision="fp32", backend="auto")  # from the cached choice
    assert cold.runner_for(1) is cold.runner and cold.runner.backend == "onnx"
    many = [f"{t} {i}" for i in range(QUERY_TEXTS // len(TEXTS) + 1) for t in TEXTS]
    together = cold.encode(many)  # more than QUERY_TEXTS texts: the bulk runner
    assert len(many) > QUERY_TEXTS and cold.runner_for(len(many)).backend == "torch" and cold.bulk_loaded
    assert not cold.runner.started  # a bulk job never made the query runner's ONNX session
    alone = np.stack([cold.encode([t])[0] for t in many])
    assert cold.runner.started
    Encoder.clear_cache()
    query = Encoder.load(tiny_model, precision="fp32", backend="auto")
    query.encode(TEXTS[:1])
    assert not query.bulk_loaded  # a query never loaded the bulk runner
    np.testing.assert_allclose(together, alone, atol=1e-4)


def test_index_info_records_both_paths(tiny_model, isolated_cache, torch_bulk_onnx_queries, tmp_path):
    index = Index.create(tmp_path / "idx", model=tiny_model, precision="fp32", backend="auto")
    index.add([{"id": f"d{i}", "text": t} for i, t in enumerate(TEXTS)])
    info = index.info()
    assert (info.bulk, info.query, info.backend) == ("torch fp32", "onnx fp32", "auto")
    out = subprocess.run([sys.executable, "cli.py", "index", "info", "--index", str(tmp_path / "idx")], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    shown = dict(line.split(None, 1) for line in out.stdout.splitlines() if line.strip())
    assert (shown["bulk"].strip(), shown["query"].strip()) == ("torch fp32", "onnx fp32")


QUERY = r'''
import json, sys
from cli import main
sys.argv = ["semsearch", "query", sys.argv[1], "--index", sys.argv[2], "-k", "3", "--json"]
try:
    main()
except SystemExit as exit:
    assert not exit.code, exit.code
print(json.dumps(sorted(m for m in ("torch", "transformers") if m in sys.modules)), file=sys.stderr)
'''


def test_a_query_of_an_index_with_a_torch_bulk_path_imports_no_torch(tiny_model, isolated_cache,
                                                                     torch_bulk_onnx_queries, tmp_path):
    Index.create(tmp_path / "idx", model=tiny_model, precision="fp32", backend="auto").add(
        [{"id": f"d{i}", "text": t} for i, t in enumerate(TEXTS)])
    out = subprocess.run([sys.executable, "-c", QUERY, "the bank of the river", str(tmp_path / "idx")], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)  # reads the cached choice
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stderr.strip().splitlines()[-1]) == []
    assert json.loads(out.stdout)["hits"][0]["id"] == "d1"


@pytest.mark.integration
def test_on_the_embedded_model_auto_bulk_and_queries_agree_within_the_tolerance():
    enc = Encoder.load()  # the product default, whatever this machine chooses
    texts = workload_texts()["short"][: QUERY_TEXTS + 1] + [TEXTS[4] * 10]
    together = enc.encode(texts, warn=False)
    alone = np.stack([enc.encode([t], warn=False)[0] for t in texts])
    cosine = float((together * alone).sum(axis=1).min())
    assert cosine >= policy.MIN_PROBE_COSINE, (enc.backend, enc.precision, enc.query_backend, cosine)


def test_doctor_times_every_candidate_and_says_why(tiny_model, isolated_cache):
    from click.testing import CliRunner

    from cli import cli

    result = CliRunner().invoke(cli, ["doctor", "--model", tiny_model, "--precision", "fp32", "--rounds", "1",
                                      "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["available"] == [rules.TORCH_FP32, rules.ONNX_FP32]
    assert [s["name"] for s in report["speeds"]] == report["available"]
    assert all(s["long_texts_per_s"] > 0 and s["query_ms"] > 0 for s in report["speeds"])
    assert report["bulk"] in report["available"] and report["query"] == rules.ONNX_FP32
    assert report["bulk_reason"] and report["query_reason"]
    assert report["cached"] is None  # doctor measures, it does not store
    assert report["torch_build"] == "transformers"  # the first load in this cache; it verifies the direct build
    text = CliRunner().invoke(cli, ["doctor", "--model", tiny_model, "--precision", "fp32", "--rounds", "1"])
    assert text.exit_code == 0 and "bulk:" in text.output and "query: onnx fp32" in text.output
    assert "torch model: built from model.safetensors without transformers" in text.output


def test_embed_prints_the_bulk_path_whatever_the_count_and_the_query_path_when_asked(
        tiny_model, isolated_cache, torch_bulk_onnx_queries):
    from click.testing import CliRunner

    from cli import cli

    def embed(*flags: str) -> tuple[list[float], Encoder]:
        Encoder.clear_cache()
        out = CliRunner().invoke(cli, ["embed", TEXTS[1], "--model", tiny_model, "--precision", "fp32",
                                       "--backend", "auto", *flags])
        assert out.exit_code == 0, out.output
        return json.loads(out.stdout)["vector"], Encoder.load(tiny_model, precision="fp32", backend="auto")

    stored, enc = embed()  # one text, encoded as an index stores it
    assert enc.bulk_loaded and not enc.runner.started
    query, enc = embed("--as-query")
    assert not enc.bulk_loaded and enc.runner.started
    want_stored = enc.encode([TEXTS[1]], bulk=True)[0]
    np.testing.assert_allclose(stored, want_stored, atol=1e-7)
    np.testing.assert_allclose(query, enc.encode([TEXTS[1]], bulk=False)[0], atol=1e-7)
    many = TEXTS * (QUERY_TEXTS // len(TEXTS) + 1)
    assert len(many) > QUERY_TEXTS and enc.runner_for(len(many), bulk=False) is enc.runner


def test_bf16_as_asked_or_recorded_needs_no_measurement_and_answers_queries_on_the_graph(
        tiny_model, isolated_cache, monkeypatch):
    monkeypatch.setattr(auto, "measure", lambda *a, **k: pytest.fail("measured"))
    enc = Encoder.load(tiny_model, precision="bf16", backend="auto")
    assert (enc.backend, enc.precision, enc.query_backend, enc.query_precision) == ("torch", "bf16", "onnx", "fp32")
    assert enc.runner_for(1).backend == "onnx" and enc.runner_for(QUERY_TEXTS + 1).precision == "bf16"
    assert enc.describe()["precision"] == "bf16"  # what an index records: its stored vectors' precision


@pytest.mark.integration
def test_on_the_embedded_model_a_cold_query_follows_the_recorded_query_path(tmp_path):
    index = Index.create(tmp_path / "idx")  # the product default: --precision auto --backend auto
    index.add([{"id": f"d{i}", "text": t} for i, t in enumerate(TEXTS)])
    info = index.info()
    out = subprocess.run([sys.executable, "-c", QUERY, "the bank of the river", str(tmp_path / "idx")], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    imported = json.loads(out.stderr.strip().splitlines()[-1])
    assert (imported == []) == info.query.startswith("onnx"), (info.bulk, info.query, imported)
    assert json.loads(out.stdout)["hits"][0]["id"] == "d1"
