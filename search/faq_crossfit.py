"""Calibration candidates of a FAQ whose whitening fit holds the calibration questions, each scored out of fold.

``faq calibrate`` refits a whitened index with the calibration questions'
texts (``faq_tuning.fit_questions_into``). Scored with that fit, the same
questions are in its sample and look closer to their entries than a new
question will: on StackFAQ a threshold chosen on them reached 95% precision
there and 94.4-94.7% on the held-out half (``bench/faq.py``, five splits).
So the questions are split into ``FOLDS`` folds by text, and each fold is
scored with a transform fitted as the index's is, but without that fold's
texts: every question meets a fit that never saw it, as a customer's does.
The candidates are then what ``FAQ.candidates`` gives a search: the entries
of the ``depth`` best FAQ questions (exact scores), with their question
score and, where wanted, their answer score.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from index.indexer import Index
from index.model.whitening import sample_rows
from index.storage import whitened

from .faq import FAQMatch, answer_of, answers_of

FOLDS = 5


def holds_questions(info) -> bool:
    """Whether the index whitens with a fit that pooled recorded questions."""
    fit = info.get(whitened.FIT) or {}
    return bool(fit.get("whiten")) and int(fit.get("questions", 0)) > 0 and bool(info.get(whitened.QUESTIONS))


def folds_of(recorded: Sequence[str], folds: int = FOLDS) -> dict[str, int]:
    """The fold of each recorded question text (a fixed shuffle: the same texts, the same folds)."""
    order = np.random.default_rng(0).permutation(len(recorded))
    return {recorded[i]: rank % folds for rank, i in enumerate(order.tolist())}


def out_of_fold_candidates(index: Index, questions: Sequence[str], depth: int, answers_too: bool,
                           folds: int = FOLDS) -> list[list[FAQMatch]]:
    """Each question's candidate entries, scored with a fit that left out its fold of the recorded
    questions (a question that is not recorded: with the fit of all of them)."""
    info = index.config
    encoder = index.encoder
    passages = index.store.counts()[1]
    sentences = whitened.corpus_sentences(index.store)  # as the index's own fit pools them
    ids = [doc_id for rows in index.store.iter_documents() for doc_id, _ in rows]
    docs = index.store.documents(ids)
    # The FAQ questions' stored raw vectors (a passage each, or several for a long one), read once: they
    # are scored, and the fit reads them as ``whitened.sample`` does (all, or the same rows of them).
    chunks = list(index.store.iter_vectors(int(info["dimension"])))
    pids = np.concatenate([c[0] for c in chunks]) if chunks else np.zeros(0, np.int64)
    faq_questions = np.concatenate([c[1] for c in chunks]) if chunks else np.zeros((0, int(info["dimension"])))
    rows = sample_rows(len(faq_questions))
    corpus = faq_questions if rows is None else faq_questions[rows]
    column = {d: i for i, d in enumerate(ids)}
    owned = index.store.passages(pids.tolist())
    question_of = np.array([column[owned[int(p)][0]] for p in pids], dtype=np.int64)
    entries = [str(docs[d][1].get("faq_id", d)) for d in ids]
    answers = [answers_of(docs[d][1]) or [docs[d][0]] for d in ids]  # as FAQ.weigh_answers takes them
    owner = np.repeat(np.arange(len(ids)), [len(a) for a in answers])
    answer_vectors = encoder.encode([t for a in answers for t in a], warn=False, bulk=False) if answers_too else None
    recorded = [str(t) for t in info[whitened.QUESTIONS]]
    fold_of = folds_of(recorded, folds)
    questions = [q.strip() for q in questions]  # as recorded
    asked = whitened.text_vectors(encoder, questions)  # the very vectors the fits pool
    out: list[list[FAQMatch] | None] = [None] * len(questions)
    for fold in [*range(folds), None]:  # None: the questions no fold holds, with the fit of all
        rows = [i for i, q in enumerate(questions) if fold_of.get(q) == fold]
        if not rows:
            continue
        kept = [t for t in recorded if fold_of[t] != fold]
        transform, _ = whitened.fit_for({**info, whitened.QUESTIONS: kept}, corpus, lambda: encoder, passages,
                                        lambda: sentences)
        query = whitened.apply(transform, asked[rows])
        question_scores = np.full((len(rows), len(ids)), -np.inf, dtype=np.float32)
        np.maximum.at(question_scores.T, question_of, (query @ whitened.apply(transform, faq_questions).T).T)
        answer_scores = None
        if answers_too:  # the closest answer of each FAQ question's entry
            each = query @ whitened.apply(transform, answer_vectors).T
            answer_scores = np.full((len(rows), len(ids)), -np.inf, dtype=np.float32)
            np.maximum.at(answer_scores.T, owner, each.T)
        for r, i in enumerate(rows):
            best = np.argsort(-question_scores[r], kind="stable")[:depth]
            seen: dict[str, FAQMatch] = {}
            for d in best.tolist():
                if not np.isfinite(question_scores[r, d]):  # a document without a passage: nothing to match
                    break
                if entries[d] not in seen:
                    score = float(question_scores[r, d])
                    seen[entries[d]] = FAQMatch(
                        id=entries[d], question=docs[ids[d]][0], answer=answer_of(docs[ids[d]][1]), score=score,
                        question_score=score,
                        answer_score=None if answer_scores is None else float(answer_scores[r, d]))
            out[i] = list(seen.values())
    return [matches or [] for matches in out]
