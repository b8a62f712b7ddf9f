"""Tokens, token and word vectors, contextual similarity, the layer report and Hangul kept whole.

Unit tests on the tiny random BERT (its vocabulary holds Hangul syllables, jamo and the
tutorial's longer jamo pieces); the bank example on the embedded model is an integration test.
"""

from __future__ import annotations

import json
import logging
import unicodedata
import warnings

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import require

from cli import cli
from index import Encoder
from index.errors import SemsearchError
from index.model.contextual import find_word, layer_report, similar_words
from index.model.hangul import KEPT, NO_SYLLABLES, SPLIT, WHOLE
from index.model.reference import hidden_state_vectors

BOAT = "배를 타고 여행을 간다."
PEAR = "추석에 먹은 배가 맛있었다."
BANK = "After stealing money from the bank vault, the bank robber was seen fishing on the Mississippi river bank."


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


# --- tokens ----------------------------------------------------------------------------------
def test_tokens_have_ids_words_and_spans_in_the_original_text(tiny_model):
    enc = Encoder.load(tiny_model)
    text = "The quick brown fox!"
    toks = enc.tokens(text)
    assert toks[0].special and toks[-1].special and toks[0].word is None and toks[0].start is None
    content = toks[1:-1]
    assert [t.id for t in content] == enc.tokenizer.ids([text])[0]
    for t in content:
        assert text[t.start:t.end].lower().replace(" ", "") == t.token.removeprefix("##")
    assert [t.word for t in content] == [0, 1, 2, 3, 4]  # "!" is a word of its own


def test_spans_point_into_text_that_is_not_nfc(tiny_model):
    enc = Encoder.load(tiny_model)
    nfd = unicodedata.normalize("NFD", "배를 타고")
    assert len(nfd) > len("배를 타고")
    toks = [t for t in enc.tokens(nfd) if not t.special]
    assert [t.token for t in toks] == ["배", "##를", "타", "##고"]
    assert [unicodedata.normalize("NFC", nfd[t.start:t.end]) for t in toks] == ["배", "를", "타", "고"]
    # The ids are those the sentence vectors use.
    assert [t.id for t in toks] == enc.tokenizer.ids(["배를 타고"])[0]


def test_jamo_split_reproduces_the_tutorial_without_keep_hangul(tiny_model_nfd):
    Encoder.clear_cache()
    enc = Encoder.load(tiny_model_nfd, keep_hangul=False)
    assert enc.hangul.state == SPLIT
    with pytest.warns(UserWarning, match="jamo.*--keep-hangul"):
        toks = [t.token for t in enc.tokens(BOAT) if not t.special]
    assert toks[:2] == ["ᄇ", "##" + unicodedata.normalize("NFD", "배를")[1:]]  # ᄇ, ##ᅢ를


def test_keep_hangul_keeps_syllables_whole_and_says_so(tiny_model_nfd, caplog):
    Encoder.clear_cache()
    enc = Encoder.load(tiny_model_nfd)  # on by default
    assert enc.keep_hangul and enc.hangul.state == KEPT
    logger = logging.getLogger("semsearch")  # the CLI may have stopped it propagating to the root
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level("INFO", logger="semsearch"):
            toks = [t.token for t in enc.tokens(BOAT) if not t.special]
    finally:
        logger.removeHandler(caplog.handler)
    assert toks[:2] == ["배", "##를"]
    assert any("keeping Hangul syllables whole" in r.getMessage() for r in caplog.records)
    # Latin accents are still stripped, as the uncased vocabulary expects.
    assert enc.tokenizer.tokenize("Café") == enc.tokenizer.tokenize("Cafe")


def test_keep_hangul_changes_nothing_for_a_tokenizer_that_keeps_syllables(tiny_model):
    assert Encoder.load(tiny_model).hangul.state == WHOLE
    a = Encoder.load(tiny_model, keep_hangul=False).encode([BOAT])
    b = Encoder.load(tiny_model, keep_hangul=True).encode([BOAT])
    np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.integration
def test_a_vocabulary_without_syllables_falls_back_with_a_warning(embedded_model):
    enc = Encoder.load(None, precision="fp32", backend="torch")
    assert enc.keep_hangul and enc.hangul.state == NO_SYLLABLES
    with pytest.warns(UserWarning, match="no Hangul syllables"):
        toks = [t.token for t in enc.tokens(BOAT) if not t.special]
    assert "[UNK]" not in toks  # the model's own jamo split, not unknown tokens


def test_sentence_vectors_and_the_reference_follow_keep_hangul(tiny_model_nfd):
    kept = Encoder.load(tiny_model_nfd, keep_hangul=True)
    split = Encoder.load(tiny_model_nfd, keep_hangul=False)
    a, b = kept.encode([BOAT], warn=False)[0], split.encode([BOAT], warn=False)[0]
    assert float(a @ b) < 0.999  # different tokens, different vectors
    for enc, vec in ((kept, a), (split, b)):
        ref = hidden_state_vectors(tiny_model_nfd, [BOAT], enc.layer, enc.pooling, enc.max_length,
                                   keep_hangul=enc.keep_hangul)[0]
        assert float(ref @ vec) > 0.9999


def test_the_index_records_keep_hangul_and_rebuild_changes_it(tiny_model_nfd, tmp_path):
    from index import Index
    from search import Searcher

    docs = [{"id": "boat", "text": BOAT}, {"id": "pear", "text": PEAR}]
    index, _ = Index.build(tmp_path / "idx", docs, model=tiny_model_nfd)
    assert index.info().keep_hangul is True
    assert Searcher(tmp_path / "idx").encoder.hangul.state == KEPT
    index.rebuild(keep_hangul=False)
    assert index.info().keep_hangul is False
    assert Searcher(tmp_path / "idx").encoder.hangul.state == SPLIT


def test_indexes_from_before_keep_hangul_keep_the_models_split():
    from index.model.config import EncoderConfig

    info = {"model": "m", "layer": -2, "pooling": "mean", "max_length": 64, "precision": "fp32"}
    assert EncoderConfig.from_info(info).keep_hangul is False
    assert EncoderConfig.from_info({**info, "keep_hangul": True}).keep_hangul is True


# --- token and word vectors ---------------------------------------------------------------
def test_token_vectors_are_the_hidden_states_of_the_chosen_layers(tiny_model):
    enc = Encoder.load(tiny_model)
    import torch
    from transformers import AutoModel, AutoTokenizer

    text = "the bank of the river"
    hf = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModel.from_pretrained(tiny_model).eval()
    with torch.inference_mode():
        states = model(**hf(text, return_tensors="pt"), output_hidden_states=True).hidden_states
    states = np.stack([s[0].numpy() for s in states])
    (tv,) = enc.token_vectors([text], layers=[-4, -3, -2, -1], combine="sum")
    np.testing.assert_allclose(tv.vectors, states[-4:].sum(axis=0), atol=1e-4)
    (tv,) = enc.token_vectors([text], layers=[1, -1], combine="concat")
    np.testing.assert_allclose(tv.vectors, np.concatenate([states[1], states[-1]], axis=1), atol=1e-4)
    (tv,) = enc.token_vectors([text], layers=[0, 2], combine="mean")
    np.testing.assert_allclose(tv.vectors, (states[0] + states[2]) / 2, atol=1e-4)


def test_the_mean_of_layer_minus_two_token_vectors_is_the_sentence_vector(tiny_model):
    enc = Encoder.load(tiny_model)
    text = "how do i reset my password"
    (tv,) = enc.token_vectors([text], layers=[-2])
    mean = tv.vectors.mean(axis=0)
    assert float(mean / np.linalg.norm(mean) @ enc.encode([text])[0]) > 0.99999


def test_only_the_layers_asked_for_are_computed(tiny_model, monkeypatch):
    enc = Encoder.load(tiny_model)
    seen = []
    real = enc.hidden_states.run
    monkeypatch.setattr(enc.hidden_states, "run", lambda ids, upto: seen.append(upto) or real(ids, upto))
    enc.token_vectors(["the bank"], layers=[1])
    assert seen == [1]


def test_word_vectors_merge_pieces(tiny_model):
    enc = Encoder.load(tiny_model)
    text = "zyx fox"  # zyx is out of the vocabulary: pieces z ##y ##x
    (tv,) = enc.token_vectors([text])
    (wv,) = enc.word_vectors([text], pieces="mean")
    (first,) = enc.word_vectors([text], pieces="first")
    assert [w.text for w in wv.words] == ["zyx", "fox"]
    assert wv.words[0].pieces == ("z", "##y", "##x") and (wv.words[0].start, wv.words[0].end) == (0, 3)
    np.testing.assert_allclose(wv.vectors[0], tv.vectors[1:4].mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(first.vectors[0], tv.vectors[1], atol=1e-6)
    np.testing.assert_allclose(wv.vectors[1], tv.vectors[4], atol=1e-6)


@pytest.mark.parametrize("layers", [[7], [-5], []])
def test_layers_out_of_range_are_refused(tiny_model, layers):
    with pytest.raises(SemsearchError, match="out of range|at least one layer"):
        Encoder.load(tiny_model).token_vectors(["the bank"], layers=layers)


# --- contextual similarity ----------------------------------------------------------------------
def test_find_word_uses_characters_and_token_starts(tiny_model):
    enc = Encoder.load(tiny_model)
    text = "The bank sat on the bank"
    second = find_word(enc.tokens(text), text, "BANK", occurrence=2)
    assert (second.start, second.end) == (20, 24) and second.word == "bank"
    with pytest.raises(SemsearchError, match="2 occurrence"):
        find_word(enc.tokens(text), text, "bank", occurrence=3)
    with pytest.raises(SemsearchError, match="not found in sentence 2"):
        find_word(enc.tokens(text), text, "boat", where="sentence 2")
    with pytest.raises(SemsearchError, match="not found"):  # inside a token: not a match
        find_word(enc.tokens("the sea"), "the sea", "ea")


def test_korean_word_is_found_by_characters_not_positions(tiny_model_nfd):
    Encoder.clear_cache()
    enc = Encoder.load(tiny_model_nfd)
    report = similar_words(enc, [(BOAT, "배"), (PEAR, "배")])
    assert [(o.start, o.end, o.pieces) for o in report.items] == [(0, 1, ("배",)), (7, 8, ("배",))]
    split = Encoder.load(tiny_model_nfd, keep_hangul=False)
    with pytest.warns(UserWarning, match="jamo"):
        report = similar_words(split, [(BOAT, "배"), (PEAR, "배")])
    # 배 covers the jamo piece ᄇ and the piece that carries its vowel: both, never a wrong token.
    assert report.items[0].pieces == ("ᄇ", "##" + unicodedata.normalize("NFD", "배를")[1:])


def test_similar_words_matrix_is_the_cosine_of_word_vectors(tiny_model):
    enc = Encoder.load(tiny_model)
    pairs = [("the bank of the river", "bank"), ("money in the bank", "bank"), ("the river bank", "river")]
    report = similar_words(enc, pairs)
    vecs = []
    for sentence, word in pairs:
        (wv,) = enc.word_vectors([sentence])
        vecs.append(wv.vectors[[w.text for w in wv.words].index(word)])
    vecs = np.stack(vecs) / np.linalg.norm(vecs, axis=1, keepdims=True)
    np.testing.assert_allclose(report.matrix, vecs @ vecs.T, atol=1e-5)
    sentences = enc.encode([s for s, _ in pairs])
    np.testing.assert_allclose(report.sentence_matrix, sentences @ sentences.T, atol=1e-5)


def test_layer_report(tiny_model):
    enc = Encoder.load(tiny_model)
    report = layer_report(enc, ["the bank of the river", "money in the bank"])
    assert [s.layer for s in report.layers] == [0, 1, 2, 3] and report.sentence_layer == 2
    for s in report.layers:
        assert s.minimum <= s.p01 <= s.p99 <= s.maximum and s.std > 0 and len(s.similarity) == 1
    (tv,) = enc.token_vectors(["the bank of the river"], layers=[1])
    assert report.layers[1].minimum <= float(tv.vectors.min())
    mean = lambda t, layer: (lambda v: v / np.linalg.norm(v))(enc.token_vectors([t], layers=[layer])[0].vectors.mean(0))
    assert report.layers[2].similarity[0] == pytest.approx(
        float(mean("the bank of the river", 2) @ mean("money in the bank", 2)), abs=1e-5)


# --- the commands -------------------------------------------------------------------------------
def test_tokens_command_json(tiny_model):
    result = run("tokens", "The fox!", "배를", "--model", tiny_model, "--json")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert [d["text"] for d in lines] == ["The fox!", "배를"]
    assert lines[0]["tokens"][1] == {"token": "the", "id": lines[0]["tokens"][1]["id"], "word": 0, "start": 0,
                                     "end": 3, "special": False}
    assert lines[0]["tokens"][0]["special"] and lines[0]["tokens"][0]["word"] is None


def test_tokens_command_warns_about_jamo(tiny_model_nfd):
    Encoder.clear_cache()
    result = CliRunner().invoke(cli, ["tokens", BOAT, "--model", tiny_model_nfd, "--no-keep-hangul"])
    assert result.exit_code == 0
    assert "warning:" in result.output and "jamo" in result.output and "--keep-hangul" in result.output
    assert "ᄇ" in result.output


def test_words_command(tiny_model):
    result = run("words", "zyx fox", "--model", tiny_model, "--layers", "-2", "-1", "--combine", "concat", "--json")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [r["word"] for r in rows] == ["zyx", "fox"] and rows[0]["pieces"] == ["z", "##y", "##x"]
    assert len(rows[0]["vector"]) == 64 and {r["text_index"] for r in rows} == {0}
    result = run("words", "zyx fox", "--model", tiny_model, "--tokens", "--json")
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [r["token"] for r in rows] == ["[CLS]", "z", "##y", "##x", "fox", "[SEP]"] and len(rows[0]["vector"]) == 32
    text = run("words", "zyx fox", "--model", tiny_model).output
    assert "z ##y ##x" in text and "sum of layers -4 -3 -2 -1" in text


def test_similar_words_command(tiny_model, tmp_path):
    require("matplotlib", "matplotlib is not installed (the plot extra)")
    plot = tmp_path / "bank.png"
    result = run("similar-words", "the bank of the river", "bank", "money in the bank", "bank", "--model", tiny_model,
                 "--json", "--plot", str(plot))
    assert result.exit_code == 0, result.output
    data = json.loads(result.output.splitlines()[-1])
    assert [i["start"] for i in data["items"]] == [4, 13]
    assert np.array(data["matrix"]).shape == (2, 2) and np.array(data["sentence_matrix"]).shape == (2, 2)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = run("similar-words", "the bank bank", "bank", "the bank bank", "bank", "--model", tiny_model,
                 "--occurrence", "1", "--occurrence", "2", "--json")
    data = json.loads(result.output)
    assert [i["start"] for i in data["items"]] == [4, 9] and data["matrix"][0][1] < 0.99999


def test_layers_command(tiny_model, tmp_path):
    require("matplotlib", "matplotlib is not installed (the plot extra)")
    plot = tmp_path / "layers.png"
    result = run("layers", "the bank", "the river", "--model", tiny_model, "--plot", str(plot))
    assert result.exit_code == 0, result.output
    assert "1~2" in result.output and "   2*" in result.output  # the pooled layer is marked
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(run("layers", "the bank", "--model", tiny_model, "--json").output)
    assert len(data["layers"]) == 4 and data["sentence_layer"] == 2


@pytest.mark.parametrize("args, message", [
    (["similar-words", "the bank", "boat", "the river", "river"], "word 'boat' not found in sentence 1"),
    (["similar-words", "the bank", "bank", "the river"], "pairs"),
    (["similar-words", " ", "bank", "the river", "river"], "sentence 1 is empty"),
    (["words", ""], "text 1 is empty"),
    (["tokens"], "at least one TEXT"),
    (["words", "the bank", "--layers", "9"], "layer 9 is out of range"),
    (["layers", "the bank", "  "], "text 2 is empty"),
    (["similar-words", "a bank", "bank", "a bank", "bank", "--occurrence", "1", "--occurrence", "1",
      "--occurrence", "1"], "one --occurrence for every pair"),
])
def test_command_errors_are_one_line(tiny_model, args, message):
    result = CliRunner().invoke(cli, [*args, "--model", tiny_model])
    assert result.exit_code != 0
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_plot_without_matplotlib_is_one_line(tiny_model, tmp_path, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    result = CliRunner().invoke(cli, ["layers", "the bank", "--model", tiny_model, "--plot", str(tmp_path / "x.png")])
    assert result.exit_code != 0 and "pip install 'semsearch[plot]'" in result.output


# --- the bank example on the embedded model --------------------------------------------------------
@pytest.mark.integration
def test_bank_same_sense_occurrences_are_closer(embedded_model):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        enc = Encoder.load(None, precision="fp32", backend="torch")
    report = similar_words(enc, [(BANK, "bank")] * 3, occurrence=[1, 2, 3])
    assert [o.start for o in report.items] == [30, 46, 100]
    vault_robber, vault_river, robber_river = report.matrix[0, 1], report.matrix[0, 2], report.matrix[1, 2]
    assert vault_robber > max(vault_river, robber_river) + 0.02
    result = run("similar-words", BANK, "bank", BANK, "bank", BANK, "bank", "--occurrence", "1", "--occurrence", "2",
                 "--occurrence", "3", "--json")
    assert json.loads(result.output)["matrix"][0][1] == pytest.approx(float(vault_robber), abs=1e-3)
