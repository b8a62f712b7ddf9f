"""Answer evidence in FAQ decisions: the calibration picks a weight, and the FAQ decides as it was calibrated."""

from __future__ import annotations

import numpy as np
import pytest

from index import Index
from search import FAQ, faq_tuning
from search.calibration import SETTING, Calibration, Observation, Rates
from search.faq import FAQMatch

ENTRIES = [
    {"id": "pw", "questions": ["how do i reset my password", "i forgot my password"],
     "answer": "Use the forgot password link on the login page."},
    {"id": "del", "question": "how do i delete my account", "answer": "Open settings and choose delete account."},
    {"id": "bill", "question": "where is my invoice",
     "answers": ["Invoices are under billing.", "Ask support for a copy of the invoice."]},
    {"id": "bank", "question": "the bank of the river", "answer": "The land by the water."},
]
ASKED = ["login page link", "delete account settings", "billing invoices", "land by the water",
         "reset my password", "the river bank"]


def match(entry: str, question: float, answer: float) -> FAQMatch:
    return FAQMatch(id=entry, question=entry, answer="a", score=question, question_score=question, answer_score=answer)


def test_observations_rank_entries_by_the_weighted_score():
    labelled = [faq_tuning.LabelledQuestion("q", "b")]
    found = [[match("a", 0.60, 0.10), match("b", 0.55, 0.50)]]
    (alone,) = faq_tuning.observations(labelled, found, 0.0)
    (weighed,) = faq_tuning.observations(labelled, found, 0.5)
    assert (alone.top, alone.second, alone.correct) == (0.60, 0.55, False)
    assert weighed.top == pytest.approx(0.80) and weighed.second == pytest.approx(0.65) and weighed.correct


def test_the_weight_that_answers_most_wins_and_ties_keep_the_smaller():
    right = [Observation(0.9, 0.1, True)] * 39 + [Observation(0.9, 0.1, False)]  # 0.975, bound 0.959
    worse = [Observation(0.9, 0.1, True)] * 10 + [Observation(0.9, 0.1, False)] * 10
    weight, best, _, answered = faq_tuning.best_weight({0.0: worse, 0.2: right, 0.4: right}, 0.95)
    assert weight == 0.2 and best.answered == 1.0 and answered == {0.0: None, 0.2: 1.0, 0.4: 1.0}
    weight, best, top, answered = faq_tuning.best_weight({0.0: worse, 0.3: worse}, 0.95)
    assert weight == 0.0 and best is None and top.precision == 0.5 and answered == {0.0: None, 0.3: None}


@pytest.fixture
def faq_index(tiny_model, tmp_path):
    path = tmp_path / "faq"
    FAQ.build(path, ENTRIES, model=tiny_model, whitening="on")
    return path


def test_a_weighted_faq_scores_answers_as_the_calibration_observed_them(faq_index):
    with Index.open(faq_index) as idx:
        rates = Rates(-1.0, 0.0, 1.0, 1.0, None, 6, 0)
        idx.set_setting(SETTING, Calibration.from_rates(rates, 0.5, idx.config, answer_weight=0.3).as_dict())
    faq = FAQ(faq_index)
    labelled = [faq_tuning.LabelledQuestion(q, None) for q in ASKED]
    observed = faq_tuning.observe_faq(faq, labelled)  # the FAQ's own weight, 0.3
    index = Index.open(faq_index)
    with index.snapshot() as snap:  # an entry with several answers: the closest counts
        by_entry = {e["id"]: snap.whiten(snap.encoder.encode(e.get("answers") or [e["answer"]])) for e in ENTRIES}
    for question, seen in zip(ASKED, observed):
        reply = faq.answer(question)
        assert reply.answer_weight == 0.3 and reply.match is not None  # threshold -1: always answered
        assert (reply.match.score, reply.runners_up[0].score) == pytest.approx((seen.top, seen.second), abs=1e-5)
        with index.snapshot() as snap:
            query = snap.whiten(snap.encoder.encode([question]))[0]
        for m in [reply.match, *reply.runners_up]:
            assert m.answer_score == pytest.approx(float((by_entry[m.id] @ query).max()), abs=1e-4)
            assert m.score == pytest.approx(m.question_score + 0.3 * m.answer_score, abs=1e-6)
        scores = [m.score for m in [reply.match, *reply.runners_up]]
        assert scores == sorted(scores, reverse=True)


def test_calibration_records_the_weight_it_chose_and_questions_alone_when_told(faq_index):
    labelled = ([faq_tuning.LabelledQuestion(q, e["id"]) for e in ENTRIES for q in e.get("questions", [e.get("question")])]
                + [faq_tuning.LabelledQuestion(q, e) for q, e in zip(ASKED, ["pw", "del", "bill", "bank", "pw", "bank"])])
    report = faq_tuning.calibrate_index(faq_index, labelled, 0.5)
    assert set(report.answered_by_weight) == set(faq_tuning.WEIGHTS)
    assert report.reached and report.calibration.answer_weight in faq_tuning.WEIGHTS
    chosen = report.answered_by_weight[report.calibration.answer_weight]
    assert chosen == max(a for a in report.answered_by_weight.values() if a is not None) == report.calibration.answered
    assert FAQ(faq_index).policy().answer_weight == report.calibration.answer_weight
    alone = faq_tuning.calibrate_index(faq_index, labelled, 0.5, weigh_answers=False)
    assert list(alone.answered_by_weight) == [0.0] and alone.calibration.answer_weight == 0.0
    assert FAQ(faq_index).policy().answer_weight == 0.0


def test_an_older_calibration_without_a_weight_scores_questions_alone(faq_index):
    with Index.open(faq_index) as idx:
        old = Calibration.from_rates(Rates(0.1, 0.0, 1.0, 1.0, None, 6, 0), 0.5, idx.config).as_dict()
        del old["answer_weight"]
        idx.set_setting(SETTING, old)
    reply = FAQ(faq_index).answer("reset my password")
    assert reply.calibrated and reply.answer_weight == 0.0 and reply.match.answer_score is None
    assert "answer_score" not in reply.match.as_dict()


def test_every_answer_of_an_entry_is_kept_and_the_first_is_given(faq_index, tmp_path):
    from search.faq import answers_of, read_faq

    reply = FAQ(faq_index).answer("where is my invoice")
    assert reply.match.id == "bill" and reply.match.answer == "Invoices are under billing."
    assert answers_of(reply.match.metadata) == ENTRIES[2]["answers"]
    source = tmp_path / "faq.jsonl"
    source.write_text('{"_id": "a", "text": "q one", "metadata": {"answers": ["first", "second"]}}\n'
                      '{"_id": "b", "text": "q two", "metadata": {"answers": ["only"]}}\n')
    entries = read_faq([str(source)], question_field="text", answer_field="answers")
    assert [(e["answer"], e["metadata"].get("answers")) for e in entries] == [("first", ["first", "second"]),
                                                                           ("only", None)]


def test_answer_vectors_are_encoded_once_per_text_and_transform(faq_index, monkeypatch):
    faq = FAQ(faq_index)
    index = Index.open(faq_index)
    calls: list[int] = []
    with index.snapshot() as snap:
        real = snap.encoder.encode

        def counted(texts, **kwargs):
            calls.append(len(texts))
            return real(texts, **kwargs)

        monkeypatch.setattr(snap.encoder, "encode", counted)
        first = faq.answer_vectors.vectors(snap, ["a b", "c d", "a b"])
        again = faq.answer_vectors.vectors(snap, ["c d", "a b"])
    assert calls == [2] and np.array_equal(first[1], again[0]) and np.array_equal(first[0], first[2])


# --- calibrating on questions the whitening fit holds: out of fold ------------------------------------------
def test_a_question_is_scored_with_the_fit_that_left_its_fold_out(faq_index):
    from search import faq_crossfit
    from search.faq_crossfit import folds_of, out_of_fold_candidates
    from index.storage import whitened

    index = Index.open(faq_index)
    recorded = faq_tuning.fit_questions_into(index, [faq_tuning.LabelledQuestion(q, None) for q in ASKED])
    assert recorded == len(ASKED) and faq_crossfit.holds_questions(index.config)
    texts = index.config[whitened.QUESTIONS]
    fold = folds_of(texts)
    asked, new = ASKED[0], "how can i pay my bill"  # recorded, and never recorded
    depth = FAQ(index).depth
    out_of_fold, fresh = out_of_fold_candidates(index, [asked, new], depth, answers_too=True)
    served = FAQ(index).candidates([new])[0]  # the index's own fit (all recorded questions)
    assert [m.id for m in fresh] == [m.id for m in served]
    assert [m.question_score for m in fresh] == pytest.approx([m.question_score for m in served], abs=1e-5)
    assert [m.answer_score for m in fresh] == pytest.approx([m.answer_score for m in served], abs=1e-5)
    with index.session() as writer:  # the same index fitted without the asked question's fold
        writer.record({whitened.QUESTIONS: [t for t in texts if fold[t] != fold[asked]]})
        writer.refit(force=True)
    without = FAQ(Index.open(faq_index)).candidates([asked])[0]
    assert [m.id for m in out_of_fold] == [m.id for m in without]
    assert [m.question_score for m in out_of_fold] == pytest.approx([m.question_score for m in without], abs=1e-5)


def test_calibration_scores_out_of_fold_where_the_fit_holds_its_questions(faq_index, monkeypatch):
    from search import faq_crossfit

    calls: list[int] = []
    real = faq_crossfit.out_of_fold_candidates
    monkeypatch.setattr(faq_crossfit, "out_of_fold_candidates",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    labelled = [faq_tuning.LabelledQuestion(q, e) for q, e in zip(ASKED, ["pw", "del", "bill", "bank", "pw", "bank"])]
    faq_tuning.calibrate_index(faq_index, labelled, 0.5, fit_questions=False)  # nothing recorded: searched
    assert calls == []
    report = faq_tuning.calibrate_index(faq_index, labelled, 0.5)
    assert report.fitted_questions == len(ASKED) and calls == [1]
