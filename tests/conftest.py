"""Shared fixtures: a tiny random BERT (fast unit tests) and the embedded model (integration)."""

from __future__ import annotations

import os
import string
import tempfile
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
# Exported ONNX graphs go to a cache of the tests' own (never the user's), kept between runs:
# entries are keyed by model fingerprint and checked by hash, so a stale one is never used.
# Child processes started by the tests inherit it.
os.environ.setdefault("SEMSEARCH_CACHE", str(Path(tempfile.gettempdir()) / "semsearch-test-cache"))

WORDS = """
the a an of to and in is it you i my me we how do does can what where when why who
reset password login account delete remove invoice billing bank river money boat ship
sea eat pear fruit rates raised sat on find see forgot secret email address change
document passage search index query test long text quick brown fox jumps over lazy dog
number cat sat mat hello world korean english apple orange
""".split()


def _vocab() -> list[str]:
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens += list(string.ascii_lowercase + string.digits + string.punctuation)
    tokens += ["##" + c for c in string.ascii_lowercase + string.digits]
    tokens += WORDS
    # Hangul: every syllable, alone and as a continuation piece, plus the jamo an
    # accent-stripping tokenizer would produce.
    syllables = [chr(c) for c in range(0xAC00, 0xD7A4)]
    tokens += syllables + ["##" + s for s in syllables]
    jamo = [chr(c) for c in range(0x1100, 0x1200)]
    tokens += jamo + ["##" + j for j in jamo]
    return list(dict.fromkeys(tokens))


def make_tiny_bert(folder: Path, seed: int = 0, strip_accents: bool | None = False, layers: int = 3) -> Path:
    """Save a randomly initialised BERT and its WordPiece tokenizer as a transformers folder."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = _vocab()
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    options = dict(do_lower_case=True, strip_accents=strip_accents)
    try:  # transformers 5 takes the vocabulary itself
        tokenizer = BertTokenizerFast(vocab={t: i for i, t in enumerate(vocab)}, **options)
    except TypeError:
        tokenizer = None
    if tokenizer is None or len(tokenizer.get_vocab()) != len(vocab):  # transformers 4
        tokenizer = BertTokenizerFast(vocab_file=str(vocab_file), **options)
    assert len(tokenizer.get_vocab()) == len(vocab)
    tokenizer.save_pretrained(folder)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )
    BertModel(config).eval().save_pretrained(folder)
    return folder


@pytest.fixture(autouse=True)
def exact_arithmetic_for_unit_tests(request, monkeypatch):
    """Unit tests compare vectors to 1e-5 and look inside the torch model, so they use fp32 on the
    torch backend (tests/test_onnx.py covers ONNX Runtime); integration tests keep the product
    default (auto precision and backend)."""
    if request.node.get_closest_marker("integration") is None:
        import index.options

        monkeypatch.setattr(index.options, "DEFAULT_PRECISION", "fp32")
        monkeypatch.setattr(index.options, "DEFAULT_BACKEND", "torch")


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


@pytest.fixture(scope="session")
def embedded_model() -> str:
    from index.config import embedded_model_path

    return str(embedded_model_path())


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"evaluation data not found at {SHARED_DATA} (../shared/data next to the project)")
    return SHARED_DATA
