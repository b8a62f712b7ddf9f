"""Encoder unit tests on the tiny random BERT."""

from __future__ import annotations

import unicodedata
import warnings

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from index.errors import ModelLoadError, SemsearchError
from index.model.encoder import Encoder
from index.model.pooling import pool
from index.model.tokenizer import decomposes_hangul

TEXTS = [
    "how do i reset my password",
    "the bank of the river",
    "a",
    "배를 타고 바다로 갔다",
    "the quick brown fox jumps over the lazy dog " * 3,
]


def reference(model_dir: str, texts, layer: int, pooling: str = "mean", max_length: int = 64) -> np.ndarray:
    """Full model, output_hidden_states=True, one text at a time (no padding at all)."""
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    rows = []
    with torch.no_grad():
        for t in texts:
            enc = tok(unicodedata.normalize("NFC", t), return_tensors="pt", truncation=True, max_length=max_length)
            h = model(**enc, output_hidden_states=True).hidden_states[layer]
            rows.append(pool(h, enc["attention_mask"], pooling)[0].numpy())
    return np.stack(rows)


@pytest.mark.parametrize("layer", [-2, -1, 0, 1, -4])
def test_layer_skipping_matches_output_hidden_states(tiny_model, layer):
    enc = Encoder.load(tiny_model, layer=layer, batch_size=2)
    # The layers above the pooled one are really gone from the module list.
    assert len(enc.model.encoder.layer) == layer % 4
    got = enc.encode(TEXTS)
    np.testing.assert_allclose(got, reference(tiny_model, TEXTS, layer), atol=1e-5)


def test_layer_minus_two_drops_exactly_the_last_layer(tiny_model):
    enc = Encoder.load(tiny_model)
    assert enc.layer == -2 and enc.layer_index == 2 and len(enc.model.encoder.layer) == 2


@pytest.mark.parametrize("pooling", ["mean", "max", "cls"])
def test_poolings_match_reference_and_are_unit_length(tiny_model, pooling):
    enc = Encoder.load(tiny_model, pooling=pooling, batch_size=3)
    got = enc.encode(TEXTS)
    np.testing.assert_allclose(got, reference(tiny_model, TEXTS, -2, pooling), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert got.dtype == np.float32


def test_padding_and_batching_do_not_change_vectors(tiny_model):
    enc = Encoder.load(tiny_model, batch_size=16)
    together = enc.encode(TEXTS)
    alone = np.stack([enc.encode([t])[0] for t in TEXTS])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_order_is_restored_after_length_sorting(tiny_model):
    enc = Encoder.load(tiny_model, batch_size=2)
    forward = enc.encode(TEXTS)
    backward = enc.encode(TEXTS[::-1])
    np.testing.assert_allclose(forward, backward[::-1], atol=1e-5)
    # Different texts give different vectors, so the comparison above is meaningful.
    assert not np.allclose(forward[0], forward[1])


def test_nfc_normalisation_makes_decomposed_hangul_equal(tiny_model):
    enc = Encoder.load(tiny_model)
    nfc = "배를 타고 바다로 갔다"
    nfd = unicodedata.normalize("NFD", nfc)
    assert nfd != nfc
    a, b = enc.encode([nfc, nfd])
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_korean_is_tokenised_as_syllables(tiny_model):
    enc = Encoder.load(tiny_model)
    tokens = enc.tokenizer.tokenize("배를 타고")
    assert "[UNK]" not in tokens and tokens[0] == "배"
    assert not decomposes_hangul(enc.tokenizer)


def test_warns_when_tokenizer_splits_hangul_into_jamo(tiny_model_nfd):
    Encoder.clear_cache()  # a fresh encoder: none of its warnings given yet
    enc = Encoder.load(tiny_model_nfd, keep_hangul=False)
    assert decomposes_hangul(enc.tokenizer)
    with pytest.warns(UserWarning, match="jamo"):
        enc.encode(["배를 타고 바다로"])


def test_no_hangul_warning_for_english_text(tiny_model_nfd):
    Encoder.clear_cache()  # a fresh encoder: none of its warnings given yet
    enc = Encoder.load(tiny_model_nfd)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        enc.encode(["plain english text"])


def test_long_text_is_truncated_with_a_warning(tiny_model):
    enc = Encoder.load(tiny_model)
    with pytest.warns(UserWarning, match="truncated"):
        enc.encode(["word " * 500])


def test_tokenize_offsets_map_back_to_text(tiny_model):
    enc = Encoder.load(tiny_model)
    text = "Reset my PASSWORD, 배를 타고!"
    (tok,) = enc.tokenize([text])
    pieces = [text[s:e].lower() for s, e in tok.offsets]
    assert pieces == ["reset", "my", "password", ",", "배", "를", "타", "고", "!"]


def test_tokenize_in_chunks_matches_one_call(tiny_model):
    enc = Encoder.load(tiny_model)
    text = " ".join(f"word{i % 10} the fox" for i in range(300))
    (whole,) = enc.tokenize([text], chunk_chars=10**9)
    (chunked,) = enc.tokenize([text], chunk_chars=97)
    assert chunked.ids.tolist() == whole.ids.tolist() and chunked.offsets.tolist() == whole.offsets.tolist()


def test_bad_layer_pooling_and_model_are_clear_errors(tiny_model, tmp_path):
    with pytest.raises(SemsearchError, match="out of range"):
        Encoder.load(tiny_model, layer=4)
    with pytest.raises(SemsearchError, match="out of range"):
        Encoder.load(tiny_model, layer=-5)
    with pytest.raises(SemsearchError, match="pooling"):
        Encoder.load(tiny_model, pooling="median")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="cannot load model"):
        Encoder.load(tmp_path / "empty")


def test_fingerprint_tells_checkpoints_apart(tiny_model, tiny_model_other):
    a, b = Encoder.load(tiny_model), Encoder.load(tiny_model_other)
    assert a.fingerprint != b.fingerprint
    assert Encoder.load(tiny_model, layer=-1).fingerprint == a.fingerprint


def test_bf16_stays_close_to_fp32(tiny_model):
    fp32 = Encoder.load(tiny_model).encode(TEXTS)
    bf16 = Encoder.load(tiny_model, precision="bf16").encode(TEXTS)
    assert bf16.dtype == np.float32
    assert (fp32 * bf16).sum(axis=1).min() > 0.99


def test_bf16_attends_in_fp32_for_short_batches_only(tiny_model, monkeypatch):
    from index.model import bert

    seen: list[tuple[int, torch.dtype]] = []
    real = torch.nn.functional.scaled_dot_product_attention

    def recording(q, k, v, **kwargs):
        seen.append((q.shape[2], q.dtype))
        return real(q, k, v, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", recording)
    enc = Encoder.load(tiny_model, precision="bf16")
    if not enc.runner.lean:
        pytest.skip("the lean pass is not in use for this model")
    fp32 = Encoder.load(tiny_model).encode(["a short one", "the bank " * 30])
    seen.clear()
    bf16 = enc.encode(["a short one", "the bank " * 30])
    widths = {t: dtype for t, dtype in seen}
    assert {t for t in widths if t <= bert.SHORT_ATTENTION} and {t for t in widths if t > bert.SHORT_ATTENTION}
    assert all((dtype == torch.float32) == (t <= bert.SHORT_ATTENTION) for t, dtype in widths.items())
    assert (fp32 * bf16).sum(axis=1).min() > 0.99


def test_fp16_on_cpu_is_refused(tiny_model):
    with pytest.raises(SemsearchError, match="fp16"):
        Encoder.load(tiny_model, precision="fp16", device="cpu")


def test_auto_precision_selection(tiny_model, monkeypatch):
    import index.model.precision as precision_module
    from index.model.precision import choose_precision

    Encoder.clear_cache()
    monkeypatch.setattr(precision_module, "cpu_supports_bf16", lambda: False)
    assert Encoder.load(tiny_model, precision="auto").precision == "fp32"
    Encoder.clear_cache()
    monkeypatch.setattr(precision_module, "cpu_supports_bf16", lambda: True)
    monkeypatch.setattr(precision_module, "MIN_PROBE_COSINE", 0.0)
    chosen = Encoder.load(tiny_model, precision="auto")
    assert chosen.precision == "bf16" and chosen.probe_cosine is not None
    assert next(chosen.model.parameters()).dtype == torch.bfloat16
    Encoder.clear_cache()
    monkeypatch.setattr(precision_module, "MIN_PROBE_COSINE", 1.5)  # a probe that cannot pass keeps fp32
    kept = Encoder.load(tiny_model, precision="auto")
    assert kept.precision == "fp32" and next(kept.model.parameters()).dtype == torch.float32
    Encoder.clear_cache()
    assert choose_precision("auto", "cuda") == "fp16"
    assert choose_precision("bf16", "cpu") == "bf16"
    with pytest.raises(SemsearchError, match="unknown precision"):
        choose_precision("int4", "cpu")


def test_index_records_the_chosen_precision(tiny_model, tmp_path):
    from index import Index

    index = Index.create(tmp_path / "p", model=tiny_model, precision="bf16")
    assert Index.open(tmp_path / "p").config["precision"] == "bf16"
    assert index.encoder.precision == "bf16"


def test_lean_forward_is_used_only_when_it_reproduces_the_library(tiny_model, monkeypatch):
    from index.model import bert

    Encoder.clear_cache()
    enc = Encoder.load(tiny_model)
    assert enc.lean is True  # a plain BERT: the lean pass agreed with transformers on the probe
    expected = reference(tiny_model, TEXTS, -2)
    np.testing.assert_allclose(enc.encode(TEXTS), expected, atol=1e-5)
    Encoder.clear_cache()
    monkeypatch.setattr(bert, "lean_hidden", lambda model, ids, mask: torch.zeros(*ids.shape, 32) + 1.0)
    fallback = Encoder.load(tiny_model)
    assert fallback.lean is False  # a disagreeing lean pass is never used
    np.testing.assert_allclose(fallback.encode(TEXTS), expected, atol=1e-5)
    Encoder.clear_cache()
