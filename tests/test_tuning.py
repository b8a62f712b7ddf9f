"""Approximate indexes tune their search settings to a recall target, measured on their own passages."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from cli import cli
from index import Index
from index.ann import registry
from index.ann.registry import SearchSettings
from index.ann.tuning import PROXY_COSINE, Tuning, exact_neighbours, measure, proxy_queries, tune
from search import Searcher

WORDS = "the a of to and in bank river money boat sea pear fruit fox dog cat quick brown lazy over".split()


def docs(n: int, prefix: str = "d", seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"id": f"{prefix}{i}", "text": " ".join(rng.choice(WORDS, 6)) + f" {i}"} for i in range(n)]


def clustered(n: int, dim: int = 64, centres: int = 40, noise: float = 0.35, seed: int = 0) -> np.ndarray:
    """Unit vectors in tight clusters: the data on which fixed defaults lose recall."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, dim)).astype(np.float32)
    v = c[rng.integers(0, centres, n)] + noise * rng.standard_normal((n, dim)).astype(np.float32) / np.sqrt(dim)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def tuned_on(kind: str, vecs: np.ndarray, target: float):
    ids = np.arange(len(vecs), dtype=np.int64)
    batches = lambda: iter([(ids, vecs)])  # noqa: E731
    index = registry.build(kind, vecs.shape[1], len(vecs), batches)
    queries = proxy_queries(vecs[np.random.default_rng(1).choice(ids, 200, replace=False)])
    lookup = lambda wanted: {int(i): vecs[int(i)] for i in wanted}  # noqa: E731
    result = tune(index, queries, batches, lookup, target)
    return index, result, queries, lookup


def test_exact_neighbours_stream_the_batches():
    vecs = clustered(500)
    ids = np.arange(500, dtype=np.int64) + 1000
    queries = proxy_queries(vecs[:5])
    truth = exact_neighbours(lambda: iter([(ids[:250], vecs[:250]), (ids[250:], vecs[250:])]), queries, 10)
    brute = np.argsort(-(queries @ vecs.T), axis=1)[:, :10] + 1000
    assert truth.tolist() == brute.tolist()


def test_proxy_queries_sit_at_the_chosen_cosine_to_their_passage():
    vecs = clustered(300, dim=384)
    cosines = (proxy_queries(vecs) * vecs).sum(axis=1)
    assert abs(float(np.median(cosines)) - PROXY_COSINE) < 0.02
    assert np.allclose(np.linalg.norm(proxy_queries(vecs), axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("kind", ["hnsw", "ivf", "ivfpq", "ivf-disk"])
def test_tuning_reaches_the_target_with_the_cheapest_setting(kind):
    vecs = clustered(10_000)
    index, result, queries, lookup = tuned_on(kind, vecs, 0.95)
    assert result.kind == kind and result.reached and result.recall >= 0.95
    # The recall it records is what those settings really give, measured independently.
    truth = np.argsort(-(queries @ vecs.T), axis=1)[:, :10]
    again = measure(index, result.search_settings(), queries, truth, lookup)
    assert again == pytest.approx(result.recall, abs=0.005)  # float ties at rank 10 may differ
    # The rung below it on the ladder does not reach the target.
    ladder = index.tuning_ladder()
    rung = ladder.index(result.search_settings())
    if rung > 0:
        assert measure(index, ladder[rung - 1], queries, truth, lookup) < 0.95


def test_an_unreachable_target_keeps_the_best_setting_and_says_so():
    vecs = clustered(3000)
    _, result, _, _ = tuned_on("ivf", vecs, 1.01)
    assert not result.reached and result.settings == {"nprobe": result.settings["nprobe"]}
    assert result.recall == pytest.approx(1.0, abs=0.02)


def test_exact_indexes_need_no_tuning():
    vecs = clustered(2000)
    _, result, _, _ = tuned_on("flat", vecs, 0.95)
    assert result is None


@pytest.fixture
def ivf_index(tiny_model, tmp_path):
    path = tmp_path / "idx"
    Index.build(path, docs(3000), model=tiny_model, index_type="ivf")[0].close()
    return path


def test_a_build_records_its_tuning_and_searches_use_it(ivf_index, monkeypatch):
    info = Index.open(ivf_index).info()
    tuned = Tuning.from_info(info.search_tuning)
    assert tuned is not None and tuned.kind == "ivf" and tuned.reached and tuned.passages == 3000
    assert info.target_recall == 0.95 and tuned.index == info.vector_index
    searcher = Searcher(ivf_index)
    seen = []
    vectors = searcher.index.vectors
    real = type(vectors).search
    monkeypatch.setattr(type(vectors), "search", lambda self, q, k, allowed=None, settings=None: (
        seen.append(settings), real(self, q, k, allowed, settings))[1])
    searcher.search("the bank of the river", k=3)
    assert seen[-1].nprobe == tuned.settings["nprobe"]
    Searcher(ivf_index, nprobe=3).search("the bank of the river", k=3)  # an explicit setting wins
    assert seen[-1].nprobe == 3


def test_tuning_follows_growth_and_the_index_type(ivf_index, tiny_model):
    index = Index.open(ivf_index)
    first = Tuning.from_info(index.config["search_tuning"])
    index.add(docs(100, prefix="small"))  # a little growth: the tuning stands
    assert Tuning.from_info(index.config["search_tuning"]) == first
    index.add(docs(3500, prefix="big", seed=3))  # more than twice the size: tuned again
    again = Tuning.from_info(index.config["search_tuning"])
    assert again != first and again.passages == 6600
    index.rebuild(index_type="flat")  # exact search: nothing to tune
    assert index.config["search_tuning"] is None and index.info().search_tuning is None
    index.rebuild(index_type="hnsw")
    assert Tuning.from_info(index.config["search_tuning"]).kind == "hnsw"


def test_target_recall_from_the_command_line(ivf_index, tiny_model, tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["index", "rebuild", "--index", str(ivf_index), "--target-recall", "0.99"])
    assert result.exit_code == 0, result.output
    info = json.loads(runner.invoke(cli, ["index", "info", "--index", str(ivf_index), "--json"]).output)
    assert info["target_recall"] == 0.99 and info["search_tuning"]["target"] == 0.99
    assert info["search_tuning"]["recall"] >= 0.99 or not info["search_tuning"]["reached"]
    bad = runner.invoke(cli, ["index", "rebuild", "--index", str(ivf_index), "--target-recall", "1.5"])
    assert bad.exit_code != 0 and "target recall" in bad.output and len(bad.output.strip().splitlines()) == 1


def test_settings_merge_given_over_tuned(ivf_index):
    with Index.open(ivf_index).snapshot() as snap:
        tuned = snap.tuning.settings["nprobe"]
        assert snap.settings(None).nprobe == tuned
        assert snap.settings(SearchSettings(nprobe=2)).nprobe == 2
        assert snap.settings(SearchSettings(ef_search=40)).nprobe == tuned


def test_an_empty_approximate_index_rebuilds_and_tunes_after_its_first_add(tiny_model, tmp_path):
    """Found by tests/test_model_based.py: re-encoding an empty hnsw index tried to tune on no passages."""
    index = Index.create(tmp_path / "idx", model=tiny_model, index_type="hnsw")
    index.rebuild(layer=-1)  # nothing stored: nothing to measure, no crash
    assert index.config.get("search_tuning") is None
    index.add(docs(5))
    assert Tuning.from_info(index.config["search_tuning"]).kind == "hnsw"
