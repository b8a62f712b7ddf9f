"""The corpus's own sentences in the whitening fit (``index/model/fit_sentences.py``, ``whitened.fit_for``)."""

from __future__ import annotations

import numpy as np
import pytest

from index import Index
from index.distributed.shards import ShardedIndex
from index.model import fit_sentences
from index.model.whitening import fit
from index.storage import whitened
from search import Searcher

TOPICS = ["the cat", "stock markets", "my password", "tomato soup", "the train to Paris", "the weather",
          "my laptop", "the football match", "the violin", "the museum", "flights to Rome", "the common cold"]
# Three sentences a document: what a passage of an abstract or a manual page looks like to the splitter.
DOCS = [{"id": f"d{i}", "text": f"This note is about {t} and nothing else. It was written on day {i} of the "
                                 f"month. Ask the desk about {t} if you need more help!"}
        for i, t in enumerate(TOPICS)]


def test_split_cuts_at_sentence_ends_before_a_capital_digit_or_hangul():
    text = "First one here. Second one, e.g. with an abbreviation. 3 cats sat! Why? 배가 아프다. 병원에 갔다."
    assert fit_sentences.split(text) == ["First one here.", "Second one, e.g. with an abbreviation.", "3 cats sat!",
                                          "Why?", "배가 아프다.", "병원에 갔다."]
    assert fit_sentences.split("no end at all") == ["no end at all"] and fit_sentences.split("  ") == []


def test_sample_keeps_sentences_of_a_useful_length_that_are_not_a_whole_text():
    cut = ["rest of a sentence cut by the passage. A whole sentence in the middle here. The start of one cut"]
    assert fit_sentences.sample(cut) == ["A whole sentence in the middle here."]
    texts = ["Too short. This one has exactly five words. Word " + " ".join(["word"] * 89) + ". Again a sentence "
             "of six words here.", "A whole text that is one sentence only.", "This one has exactly five words."]
    assert fit_sentences.sample(texts) == ["This one has exactly five words.", "Again a sentence of six words here."]
    many = [f"Sentence number {i} is in here. And this is sentence {i} again." for i in range(40)]
    picked = fit_sentences.sample(many, limit=10)
    assert len(picked) == len(set(picked)) == 10 and picked == fit_sentences.sample(many, limit=10)
    assert set(picked) <= set(fit_sentences.sample(many))  # a sample of the 80 sentences, in their order


def test_a_fit_pools_the_corpus_sentences_and_records_them(tiny_model, tmp_path):
    index, _ = Index.build(tmp_path / "ix", DOCS, model=tiny_model, whitening="on")
    record = index.config[whitened.FIT]
    sentences = whitened.corpus_sentences(index.store)
    # The tiny model's passages are short and overlap, so some cut a sentence: those pieces are left out.
    whole = {s for d in DOCS for s in fit_sentences.split(d["text"])}
    assert set(sentences) <= whole and len(sentences) >= len(DOCS)
    assert record["sentences"] == len(sentences) and f"+ {len(sentences)} sentences of the corpus" in record["source"]
    encoder = index.encoder
    corpus = whitened.sample(index.store, int(index.config["dimension"]), len(DOCS))
    pooled = np.concatenate([corpus, whitened.background_vectors(encoder), encoder.encode(sentences)])
    expected = fit(pooled)
    with index.snapshot() as snap:
        assert np.allclose(snap.whitening.matrix, expected.matrix, atol=1e-4)
        assert np.allclose(snap.whitening.mean, expected.mean, atol=1e-6)
    # The same texts give the same sample, so a refit of an unchanged index is the same transform.
    before = record["sha256"]
    index.rebuild()
    assert index.config[whitened.FIT]["sha256"] == before and index.check().ok
    assert Searcher(index).search(fit_sentences.split(DOCS[4]["text"])[0], k=1)[0].id == "d4"


def test_one_sentence_documents_add_no_sentence(tiny_model, tmp_path):
    short = [{"id": f"s{i}", "text": f"a short note about {t}"} for i, t in enumerate(TOPICS)]
    index, _ = Index.build(tmp_path / "ix", short, model=tiny_model, whitening="on")
    record = index.config[whitened.FIT]
    assert record["sentences"] == 0 and "sentences of the corpus" not in record["source"]


def test_a_sharded_fit_pools_sentences_from_every_shard(tiny_model, tmp_path):
    sharded, _ = ShardedIndex.build(tmp_path / "sharded", DOCS, shards=2, model=tiny_model, whitening="on")
    records = [ix.config[whitened.FIT] for ix in sharded.indexes]
    assert len({r["sha256"] for r in records}) == 1 and records[0]["shared"]
    per_shard = [len(whitened.corpus_sentences(ix.store)) for ix in sharded.indexes]
    assert min(per_shard) > 0 and records[0]["sentences"] == sum(per_shard)


def test_weights_count_a_row_as_its_copies():
    x = np.random.default_rng(1).standard_normal((300, 12)).astype(np.float32)
    weights = np.ones(300)
    weights[:50] = 2
    weighted, copies = fit(x, weights=weights), fit(np.concatenate([x, x[:50]]))
    assert np.allclose(weighted.matrix, copies.matrix, atol=1e-6) and np.allclose(weighted.mean, copies.mean, atol=1e-7)
    assert np.array_equal(fit(x, weights=np.ones(300)).matrix, fit(x).matrix)
    with pytest.raises(ValueError, match="positive"):
        fit(x, weights=np.zeros(300))


def test_the_background_counts_at_least_as_much_as_the_corpus_sentences(tiny_model, tmp_path, monkeypatch):
    full = whitened.background_vectors
    monkeypatch.setattr(whitened, "background_vectors", lambda encoder: full(encoder)[:10])  # fewer than the sentences
    index, _ = Index.build(tmp_path / "ix", DOCS, model=tiny_model, whitening="on")
    record = index.config[whitened.FIT]
    sentences = whitened.corpus_sentences(index.store)
    assert record["background"] == 10 and record["background_weight"] == pytest.approx(len(sentences) / 10)
    assert f"(each counted {len(sentences) / 10:g} times)" in record["source"]
    encoder = index.encoder
    corpus = whitened.sample(index.store, int(index.config["dimension"]), len(DOCS))
    parts = [corpus, full(encoder)[:10], encoder.encode(sentences)]
    weights = np.concatenate([np.ones(len(corpus)), np.full(10, len(sentences) / 10), np.ones(len(sentences))])
    expected = fit(np.concatenate(parts), weights=weights)
    with index.snapshot() as snap:
        assert np.allclose(snap.whitening.matrix, expected.matrix, atol=1e-4)
