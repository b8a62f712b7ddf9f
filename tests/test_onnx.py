"""The ONNX Runtime backend: export, verification, the model cache, int8, and a torch-free query.

Unit tests run on the tiny random BERT with a cache of their own (``isolated_cache``);
integration tests on the embedded model use the tests' shared cache (conftest).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from index import Index
from index.errors import ConfigMismatchError, SemsearchError
from index.model import auto, model_cache
from index.model import precision as policy
from index.model.encoder import Encoder
from index.model.reference import reference_vectors
from index.model.tokenizer import Tokenizer
from search import Searcher

ROOT = Path(__file__).resolve().parents[1]
TEXTS = [
    "how do i reset my password",
    "the bank of the river",
    "a",
    "배를 타고 바다로 갔다",
    "the quick brown fox jumps over the lazy dog " * 3,
]
KOREAN = ["배를 타고 여행을 간다.", "추석에 먹은 배가 맛있었다.", "한국어 문장을 토큰으로 나눈다"]


def graphs(cache: Path) -> list[str]:
    folder = cache / "graphs"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1)


# --- every backend and precision within its tolerance of the fp32 reference --------------------
@pytest.mark.parametrize("layer", [-2, -1, 1])
@pytest.mark.parametrize("pooling", ["mean", "max", "cls"])
def test_onnx_fp32_reproduces_the_reference(tiny_model, isolated_cache, layer, pooling):
    enc = Encoder.load(tiny_model, layer=layer, pooling=pooling, precision="fp32", backend="onnx")
    assert enc.backend == "onnx" and enc.model is None and enc.export_cosine >= policy.MIN_EXPORT_COSINE
    got, want = enc.encode(TEXTS), reference_vectors(enc, TEXTS)
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert cosines(got, want).min() >= policy.MIN_EXPORT_COSINE


def test_int8_stays_within_its_tolerance(tiny_model, isolated_cache):
    enc = Encoder.load(tiny_model, precision="int8", backend="auto")
    assert (enc.backend, enc.precision) == ("onnx", "int8")
    assert cosines(enc.encode(TEXTS), reference_vectors(enc, TEXTS)).min() >= policy.MIN_INT8_COSINE


def test_int8_below_its_threshold_is_refused(tiny_model, isolated_cache, monkeypatch):
    monkeypatch.setattr(policy, "MIN_INT8_COSINE", 1.01)
    with pytest.raises(SemsearchError, match=r"int8 ONNX graph .* below 1.01"):
        Encoder.load(tiny_model, precision="int8", backend="auto")
    assert graphs(isolated_cache) == []  # nothing cached that failed its check


def test_int8_and_bf16_ask_for_the_right_backend(tiny_model, isolated_cache):
    with pytest.raises(SemsearchError, match="int8 runs on ONNX Runtime"):
        Encoder.load(tiny_model, precision="int8", backend="torch")
    with pytest.raises(SemsearchError, match="bf16 runs on the torch backend"):
        Encoder.load(tiny_model, precision="bf16", backend="onnx")
    with pytest.raises(SemsearchError, match="unknown backend"):
        Encoder.load(tiny_model, backend="tensorrt")


def test_a_graph_that_misses_the_reference_is_not_used(tiny_model, isolated_cache, monkeypatch):
    monkeypatch.setattr(policy, "MIN_EXPORT_COSINE", 1.01)
    with pytest.warns(UserWarning, match="below 1.01; using the torch backend"):
        enc = Encoder.load(tiny_model, precision="fp32", backend="onnx")
    assert enc.backend == "torch" and graphs(isolated_cache) == []


# --- the cache ----------------------------------------------------------------------------------
def test_the_cache_is_keyed_by_model_layer_and_precision(tiny_model, tiny_model_other, isolated_cache):
    a = Encoder.load(tiny_model, layer=-2, precision="fp32", backend="onnx")
    b = Encoder.load(tiny_model, layer=-1, precision="fp32", backend="onnx")
    c = Encoder.load(tiny_model_other, layer=-2, precision="fp32", backend="onnx")
    d = Encoder.load(tiny_model, layer=-2, precision="int8", backend="onnx")
    names = graphs(isolated_cache)
    assert len(names) == 4 and len({n.split("-")[0] for n in names}) == 2  # two fingerprints
    assert any("-l2-" in n and n.endswith(f"-fp32-v{model_cache.EXPORT_VERSION}") for n in names)
    assert any("-l3-" in n for n in names)
    for enc in (a, b, c, d):  # each answers with its own model and layer, never another's graph
        tolerance = policy.MIN_INT8_COSINE if enc.precision == "int8" else policy.MIN_EXPORT_COSINE
        assert cosines(enc.encode(TEXTS), reference_vectors(enc, TEXTS)).min() >= tolerance
    assert not np.allclose(a.encode(TEXTS), b.encode(TEXTS)) and not np.allclose(a.encode(TEXTS), c.encode(TEXTS))


def test_storing_a_graph_drops_its_older_export_versions_only(isolated_cache, tmp_path):
    """A graph of an earlier export version for the same model, layer, length and precision is
    removed when the current version's is stored; other models' and precisions' graphs stay."""
    root = isolated_cache / "graphs"
    key = model_cache.graph_key("abc123", 5, 256, "int8")
    older = f"{key.rpartition('-v')[0]}-v{model_cache.EXPORT_VERSION - 1}"
    others = ["abc123-l5-t256-fp32-v1", "abc124-l5-t256-int8-v1", "abc123-l4-t256-int8-v1"]
    for name in (older, *others):
        (root / name).mkdir(parents=True)
        (root / name / "model.onnx").write_bytes(b"old")
    graph, tokenizer = tmp_path / "model.onnx", tmp_path / "tokenizer.json"
    graph.write_bytes(b"graph")
    tokenizer.write_text("{}", encoding="utf-8")
    model_cache.store_graph(key, graph, tokenizer, {})
    assert model_cache.load_graph(key).graph_file.read_bytes() == b"graph"
    assert graphs(isolated_cache) == sorted([key, *others])


def test_overwritten_weights_never_reuse_the_old_graph(tiny_model, tiny_model_other, isolated_cache, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    before = Encoder.load(str(folder), precision="fp32", backend="onnx")
    for weights in Path(tiny_model_other).glob("*.safetensors"):
        shutil.copy(weights, folder / weights.name)
    Encoder.clear_cache()  # a new process
    after = Encoder.load(str(folder), precision="fp32", backend="onnx")
    assert after.fingerprint != before.fingerprint and len(graphs(isolated_cache)) == 2
    np.testing.assert_allclose(after.encode(TEXTS), reference_vectors(after, TEXTS), atol=1e-4)


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_cached_graph_is_detected_and_rebuilt(tiny_model, isolated_cache, damage):
    Encoder.load(tiny_model, precision="fp32", backend="onnx")
    (name,) = graphs(isolated_cache)
    graph = isolated_cache / "graphs" / name / "model.onnx"
    data = bytearray(graph.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:  # the same size, other bytes: only the hash can tell
        middle = len(data) // 2
        data[middle : middle + 64] = bytes(64)
    graph.write_bytes(bytes(data))
    Encoder.clear_cache()
    with pytest.warns(UserWarning, match="damaged; it is rebuilt"):
        enc = Encoder.load(tiny_model, precision="fp32", backend="onnx")
    assert enc.backend == "onnx" and graphs(isolated_cache) == [name]
    np.testing.assert_allclose(enc.encode(TEXTS), reference_vectors(enc, TEXTS), atol=1e-4)
    assert model_cache.load_graph(name) is not None  # whole again


def test_auto_measures_once_and_then_uses_its_choice(tiny_model, isolated_cache, monkeypatch):
    first = Encoder.load(tiny_model, precision="fp32", backend="auto")
    choices = list((isolated_cache / "choices").glob("*.json"))
    assert choices and json.loads(choices[0].read_text())["bulk"] == f"{first.backend} {first.precision}"
    Encoder.clear_cache()

    def no_measuring(*args, **kwargs):
        raise AssertionError("measured again")

    monkeypatch.setattr(auto, "measure", no_measuring)
    again = Encoder.load(tiny_model, precision="fp32", backend="auto")
    assert (again.backend, again.query_backend) == (first.backend, first.query_backend)


def test_a_changed_model_is_refused_before_anything_is_exported(tiny_model, tiny_model_other, isolated_cache,
                                                                tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    index = Index.create(tmp_path / "idx", model=str(folder), backend="onnx")
    index.add([{"id": "a", "text": "the bank of the river"}])
    for weights in Path(tiny_model_other).glob("*.safetensors"):
        shutil.copy(weights, folder / weights.name)
    Encoder.clear_cache()
    with pytest.raises(ConfigMismatchError, match="no longer matches"):
        Searcher(tmp_path / "idx").search("river", k=1)
    assert len(graphs(isolated_cache)) == 1  # the new weights were not exported


# --- tokenisation without transformers ------------------------------------------------------------
@pytest.mark.parametrize("which", ["tiny_model", "tiny_model_nfd"])
def test_the_tokenizers_library_gives_the_transformers_ids(which, request):
    from transformers import AutoTokenizer

    folder = request.getfixturevalue(which)
    hf = AutoTokenizer.from_pretrained(folder)
    ours = [Tokenizer.from_file(Path(folder) / "tokenizer.json"), Tokenizer.from_transformers(hf)]
    for text in [*policy.PROBE_TEXTS, *KOREAN, *TEXTS]:
        want = hf(text, add_special_tokens=False)
        for tok in ours:
            (got,) = tok.with_offsets([text])
            assert got.ids.tolist() == want["input_ids"], text
        assert ours[0].tokenize(text) == hf.tokenize(text)


# --- a query that imports neither torch nor transformers --------------------------------------------
QUERY = r'''
import json, sys
from cli import main
sys.argv = ["semsearch", "query", sys.argv[1], "--index", sys.argv[2], "-k", "5", "--json"]
try:
    main()
except SystemExit as exit:
    assert not exit.code, exit.code
print(json.dumps(sorted(m for m in ("torch", "transformers") if m in sys.modules)), file=sys.stderr)
'''


def test_a_query_on_the_onnx_path_imports_no_torch_and_gives_the_torch_hits(tiny_model, tmp_path):
    docs = [{"id": f"d{i}", "text": t} for i, t in enumerate(TEXTS + KOREAN)]
    Index.create(tmp_path / "idx", model=tiny_model, backend="onnx", precision="fp32").add(docs)
    query = "the bank of the river"
    out = subprocess.run([sys.executable, "-c", QUERY, query, str(tmp_path / "idx")], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stderr.strip().splitlines()[-1]) == []  # neither was imported
    served = json.loads(out.stdout)["hits"]
    vector = Encoder.load(tiny_model, precision="fp32", backend="torch").encode([query])
    by_torch = Searcher(tmp_path / "idx").search_vectors(vector, k=5)[0]
    assert [h["id"] for h in served] == [h.id for h in by_torch]
    np.testing.assert_allclose([h["score"] for h in served], [h.score for h in by_torch], atol=1e-5)


# --- a model the export does not handle ---------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_roberta(tmp_path_factory) -> str:
    """A RoBERTa (not a plain BERT) with the tiny BERT's tokenizer."""
    import torch
    from conftest import make_tiny_bert
    from transformers import RobertaConfig, RobertaModel

    folder = make_tiny_bert(tmp_path_factory.mktemp("tiny-roberta"))
    vocab = len((folder / "vocab.txt").read_text(encoding="utf-8").splitlines())
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    torch.manual_seed(0)
    config = RobertaConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=66, pad_token_id=0)
    RobertaModel(config).eval().save_pretrained(folder)
    return str(folder)


def test_a_model_that_cannot_be_exported_stays_on_torch(tiny_roberta, isolated_cache):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Encoder.load(tiny_roberta, precision="fp32", backend="auto").backend == "torch"
    Encoder.clear_cache()
    with pytest.warns(UserWarning, match="cannot be exported to ONNX.*using the torch backend"):
        assert Encoder.load(tiny_roberta, precision="fp32", backend="onnx").backend == "torch"
    with pytest.raises(SemsearchError, match="cannot be exported to ONNX.*int8 needs ONNX Runtime"):
        Encoder.load(tiny_roberta, precision="int8", backend="auto")
    assert graphs(isolated_cache) == []


# --- the embedded model ---------------------------------------------------------------------------------
REAL = ["How do I reset my password?", "Where can I download my invoices?", "I forgot my login secret",
        "The bank raised its interest rates again this quarter.",
        "Mitochondrial dysfunction was associated with p < 0.01 in 12 of 40 patients.",
        "We sat on the river bank and watched the boats go by. " * 8]


@pytest.mark.integration
@pytest.mark.parametrize("precision, backend, tolerance", [
    ("fp32", "torch", 0.99999), ("fp32", "onnx", policy.MIN_EXPORT_COSINE), ("int8", "onnx", policy.MIN_INT8_COSINE),
    ("auto", "auto", policy.MIN_PROBE_COSINE),
])
def test_every_backend_on_the_embedded_model(precision, backend, tolerance):
    enc = Encoder.load(None, precision=precision, backend=backend)
    assert cosines(enc.encode(REAL, warn=False), reference_vectors(enc, REAL)).min() >= tolerance


@pytest.mark.integration
@pytest.mark.slow
def test_cli_int8_build_reports_its_cosine_and_answers(tmp_path):
    from click.testing import CliRunner

    from cli import cli

    runner = CliRunner()
    built = runner.invoke(cli, ["index", "build", str(ROOT / "examples" / "faq.jsonl"), "--index",
                                str(tmp_path / "q"), "--precision", "int8", "-q"])
    assert built.exit_code == 0, built.output
    assert "int8: lowest cosine to fp32 on the probe texts 0.99" in built.output
    hits = Searcher(tmp_path / "q").search("I forgot my login secret", k=3)
    assert hits[0].id == "faq1"


def test_onnx_runs_at_most_its_own_count_of_long_texts_a_call(tiny_model, isolated_cache):
    """ONNX Runtime caps long texts a call (``onnx_runner.BATCH_TEXTS``) below the encoder's batch
    size; PyTorch runs the batch size; both give the same vectors."""
    from index.model import onnx_runner

    long = [f"text {i} " + "the quick brown fox jumps over the lazy dog " * 6 for i in range(10)]
    shapes: dict[str, list[tuple[int, int]]] = {}
    vectors = {}
    for backend in ("onnx", "torch"):
        enc = Encoder.load(tiny_model, precision="fp32", backend=backend, batch_size=16)
        runner = enc.runner_for(len(long), bulk=True)
        run = runner.run
        seen = shapes.setdefault(backend, [])

        def spy(ids, mask, run=run, seen=seen):
            seen.append(ids.shape)
            return run(ids, mask)

        runner.run = spy
        try:
            vectors[backend] = enc.encode(long, bulk=True)
        finally:
            del runner.run
    assert all(w == 64 for _, w in shapes["onnx"] + shapes["torch"])  # every text fills the window
    assert [n for n, _ in shapes["onnx"]] == [onnx_runner.BATCH_TEXTS] * 2 + [2]
    assert [n for n, _ in shapes["torch"]] == [10]
    np.testing.assert_allclose(vectors["onnx"], vectors["torch"], atol=1e-4)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_layer_norms_stay_unfused_in_the_graph_and_when_onnx_runtime_loads_it(tiny_model, isolated_cache,
                                                                               tmp_path, precision):
    """ONNX Runtime's SkipLayerNormalization ran slower than an Add and a LayerNormalization
    (``onnx_export.FUSIONS_LEFT_OUT``): neither the exported graph nor the session the runner makes
    of it holds one, while attention is still fused; and the vectors still match the reference."""
    import onnx

    from index.model import onnx_runner

    enc = Encoder.load(tiny_model, layer=-2, precision=precision, backend="onnx")
    tolerance = policy.MIN_INT8_COSINE if precision == "int8" else policy.MIN_EXPORT_COSINE
    assert cosines(enc.encode(TEXTS), reference_vectors(enc, TEXTS)).min() >= tolerance
    [name] = graphs(isolated_cache)
    graph = isolated_cache / "graphs" / name / "model.onnx"
    loaded = tmp_path / "as-loaded.onnx"
    onnx_runner.new_session(str(graph), 1, save_optimized=str(loaded))
    for path in (graph, loaded):
        ops = {node.op_type for node in onnx.load(str(path)).graph.node}
        assert "LayerNormalization" in ops and "SkipLayerNormalization" not in ops, (path.name, sorted(ops))
        assert ops & {"Attention", "QAttention"}, (path.name, sorted(ops))
