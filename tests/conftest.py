"""Shared fixtures: a tiny random BERT (fast unit tests) and the embedded model (integration)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from tiny_model import make_tiny_bert  # noqa: F401  (tests import it from here too)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
# Exported ONNX graphs go to a cache of the tests' own (never the user's), kept between runs:
# entries are keyed by model fingerprint and checked by hash, so a stale one is never used.
# Child processes started by the tests inherit it.
os.environ.setdefault("SEMSEARCH_CACHE", str(Path(tempfile.gettempdir()) / "semsearch-test-cache"))


IN_CI = os.environ.get("CI") == "true"


def unavailable(reason: str):
    """Skip a test that cannot run on this machine, except in CI (``CI=true``), whose install
    step provides everything the tests need: there a missing browser or package is a failure."""
    if IN_CI:
        pytest.fail(f"{reason} (CI installs it: a skip here would hide a broken install)", pytrace=False)
    pytest.skip(reason)


def require(module: str, reason: str):
    """``pytest.importorskip`` that fails in CI instead of skipping (see ``unavailable``)."""
    try:
        return __import__("importlib").import_module(module)
    except ImportError:
        unavailable(reason)


@pytest.fixture(autouse=True)
def exact_arithmetic_for_unit_tests(request, monkeypatch):
    """Unit tests compare vectors to 1e-5 and look inside the torch model, so they use fp32 on the
    torch backend (tests/test_onnx.py covers ONNX Runtime); integration tests keep the product
    default (auto precision and backend)."""
    if request.node.get_closest_marker("integration") is None:
        import index.options

        monkeypatch.setattr(index.options, "DEFAULT_PRECISION", "fp32")
        monkeypatch.setattr(index.options, "DEFAULT_BACKEND", "torch")


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch) -> Path:
    """A model cache of this test's own (``$SEMSEARCH_CACHE``), and no encoder loaded before it."""
    from index.model.encoder import Encoder

    cache = tmp_path / "cache"
    monkeypatch.setenv("SEMSEARCH_CACHE", str(cache))
    Encoder.clear_cache()
    yield cache
    Encoder.clear_cache()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """A 3-layer, 32-d random BERT whose tokenizer keeps Hangul syllables whole."""
    return str(make_tiny_bert(tmp_path_factory.mktemp("tiny-bert")))


@pytest.fixture(scope="session")
def tiny_model_other(tmp_path_factory) -> str:
    """The same architecture with other random weights (a different fingerprint)."""
    return str(make_tiny_bert(tmp_path_factory.mktemp("tiny-bert-other"), seed=1))


@pytest.fixture(scope="session")
def tiny_model_nfd(tmp_path_factory) -> str:
    """An uncased tokenizer that strips accents and so splits Hangul into jamo (the known trap)."""
    return str(make_tiny_bert(tmp_path_factory.mktemp("tiny-bert-nfd"), strip_accents=None))


@pytest.fixture
def index_of_a_changed_model(tiny_model, tmp_path) -> Path:
    """An index whose model folder was then overwritten by weights that give other vectors."""
    import shutil

    from tiny_model import perturbed_copy

    from index import Index
    from index.model.encoder import Encoder

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    Index.build(tmp_path / "changed-idx", [{"id": "a", "text": "the bank of the river"}], model=str(model))[0].close()
    shutil.rmtree(model)
    perturbed_copy(Path(tiny_model), model)
    Encoder._cache.clear()  # as a new process would load it
    yield tmp_path / "changed-idx"
    Encoder._cache.clear()


@pytest.fixture(scope="session")
def embedded_model() -> str:
    from index.model.config import embedded_model_path

    return str(embedded_model_path())


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"evaluation data not found at {SHARED_DATA} (../shared/data next to the project)")
    return SHARED_DATA
