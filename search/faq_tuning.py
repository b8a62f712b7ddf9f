"""Calibrating a FAQ index on labelled questions, and measuring the alternatives when it falls short.

``calibrate_index`` observes each labelled question's candidate FAQ entries,
chooses the threshold, margin and answer weight (``faq_answers``) that answer
the most in-domain questions at the target precision (``calibration.choose``
for each weight) and stores them in the index. The answer weight is chosen on
these questions alone; the other layers below are measured on questions alone.
When the index's layer and pooling cannot reach the target, or reach it
answering fewer than 90% of the in-domain questions, it measures the other
layers on the same questions (exact search over the FAQ's questions encoded
with that layer) and names the ``semsearch index rebuild`` that would answer
more; ``apply`` performs that rebuild and calibrates again. Where the index
whitens, the labelled questions' texts (never their labels) are first recorded
for its whitening fit and the transform refitted with them (``fit_questions``;
``storage.whitened``): the fit then sees the questions users ask, not only
the FAQ's own.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from index.errors import InputError, SemsearchError
from index.indexer import Index
from index.storage.query_sample import record_queries
from index.storage import whitened

from . import faq_crossfit
from .calibration import SETTING, Calibration, Observation, Rates, choose
from .faq import FAQ, FAQMatch
from .faq_answers import WEIGHTS
from .searcher import Searcher

LAYERS = (-2, -1)  # the layers measured as alternatives (the tutorial's and the fine-tuned one)
ANSWERS_ENOUGH = 0.9  # below this share of in-domain questions answered, the other layers are measured too


@dataclass
class LabelledQuestion:
    question: str
    faq_id: str | None  # None: off-topic, no entry answers it


@dataclass
class Alternative:
    """What another layer would reach on the same labelled questions."""

    layer: int
    best: Rates | None  # reaching the target, or None
    top: Rates  # the most precise setting
    command: str

    def as_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "best": self.best.as_dict() if self.best else None,
                "most_precise": self.top.as_dict(), "command": self.command}


@dataclass
class CalibrationReport:
    target: float
    layer: int
    calibration: Calibration | None  # stored in the index, or None when the target is out of reach
    top: Rates  # the most precise setting at the index's layer
    alternatives: list[Alternative] = field(default_factory=list)
    applied: str | None = None  # the rebuild that was performed
    fitted_questions: int = 0  # the questions the whitening was refitted with first (0: not refitted)
    answered_by_weight: dict[float, float | None] = field(default_factory=dict)  # at the target; None: not reached

    @property
    def reached(self) -> bool:
        return self.calibration is not None

    def as_dict(self) -> dict[str, Any]:
        return {"target": self.target, "layer": self.layer, "reached": self.reached,
                "calibration": self.calibration.as_dict() if self.calibration else None,
                "most_precise": self.top.as_dict(), "alternatives": [a.as_dict() for a in self.alternatives],
                "applied": self.applied, "fitted_questions": self.fitted_questions,
                "answered_by_weight": {str(w): a for w, a in self.answered_by_weight.items()}}


def read_labelled(path: str | os.PathLike) -> list[LabelledQuestion]:
    """``{"question": ..., "faq_id": ... or null}`` lines; a bad line is an error naming it."""
    out = []
    name = os.fspath(path)
    try:
        lines = open(name, encoding="utf-8-sig").read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{name}: cannot read the labelled questions ({exc})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{name}:{number}: invalid JSON ({exc.msg})") from None
        question, faq_id = (record.get("question"), record.get("faq_id")) if isinstance(record, dict) else (None, None)
        if not isinstance(question, str) or not question.strip():
            raise InputError(f'{name}:{number}: expected {{"question": "...", "faq_id": "..." or null}}')
        out.append(LabelledQuestion(question, None if faq_id is None else str(faq_id)))
    return out


def read_off_topic(path: str | os.PathLike) -> list[LabelledQuestion]:
    """Off-topic questions, one a line."""
    try:
        text = open(os.fspath(path), encoding="utf-8-sig").read()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{os.fspath(path)}: cannot read the off-topic questions ({exc})") from None
    return [LabelledQuestion(line.strip(), None) for line in text.splitlines() if line.strip()]


def candidates(faq: FAQ, labelled: Sequence[LabelledQuestion], answers_too: bool,
               batch: int = 128) -> list[list[FAQMatch]]:
    """Each labelled question's candidate entries with their question (and answer) scores."""
    out: list[list[FAQMatch]] = []
    for start in range(0, len(labelled), batch):
        out += faq.candidates([q.question for q in labelled[start : start + batch]], answers_too)
    return out


def observations(labelled: Sequence[LabelledQuestion], found: Sequence[Sequence[FAQMatch]],
                 weight: float) -> list[Observation]:
    """What a FAQ weighing answers by ``weight`` sees of each question: its two best entries' scores."""
    out = []
    for item, matches in zip(labelled, found):
        scored = sorted(((m.question_score + weight * (m.answer_score or 0.0), m.id) for m in matches),
                        key=lambda s: -s[0])  # stable: ties keep the question ranking
        top, best = scored[0] if scored else (-1.0, None)
        second = scored[1][0] if len(scored) > 1 else -1.0
        out.append(Observation(top, second, None if item.faq_id is None else best == item.faq_id))
    return out


def observe_faq(faq: FAQ, labelled: Sequence[LabelledQuestion], weight: float | None = None) -> list[Observation]:
    """The observations of ``labelled`` with the FAQ's answer weight (or ``weight``)."""
    weight = faq.policy().answer_weight if weight is None else weight
    return observations(labelled, candidates(faq, labelled, answers_too=weight > 0), weight)


def observe_weights(faq: FAQ, labelled: Sequence[LabelledQuestion],
                    weights: Sequence[float]) -> dict[float, list[Observation]]:
    """The observations of ``labelled`` for each answer weight (only 0 where no candidate has an answer);
    where the index's whitening fit holds recorded questions, each scored out of fold (``faq_crossfit``)."""
    answers_too = any(w > 0 for w in weights)
    if faq_crossfit.holds_questions(faq.searcher.index.config):  # scored as new questions meet the fit
        found = faq_crossfit.out_of_fold_candidates(faq.searcher.index, [q.question for q in labelled],
                                                    faq.depth, answers_too)
    else:
        found = candidates(faq, labelled, answers_too=answers_too)
    if not any(m.answer for matches in found for m in matches):
        weights = [w for w in weights if w == 0] or [0.0]
    return {w: observations(labelled, found, w) for w in weights}


def best_weight(observed: dict[float, list[Observation]], target: float
                ) -> tuple[float, Rates | None, Rates, dict[float, float | None]]:
    """``(weight, its best setting or None, its most precise setting, answered at the target per
    weight)``: the weight whose best setting answers the most (ties: the smaller weight; where none
    reaches the target, the smallest weight and its most precise setting)."""
    chosen = {w: choose(observed[w], target) for w in sorted(observed)}
    answered = {w: (b.answered if b is not None else None) for w, (b, _) in chosen.items()}
    reaching = [w for w, (b, _) in chosen.items() if b is not None]
    weight = max(reaching, key=lambda w: (chosen[w][0].answered, -w)) if reaching else min(chosen)
    return weight, chosen[weight][0], chosen[weight][1], answered


def observe_layer(index: Index, layer: int, labelled: Sequence[LabelledQuestion]) -> list[Observation]:
    """Observations with another layer: the FAQ's questions and the labelled ones encoded with it, exact search."""
    from index.model.encoder import Encoder

    cfg = index.config
    encoder = Encoder.load(cfg["model"], layer=layer, pooling=cfg["pooling"], max_length=cfg["max_length"],
                           precision=cfg["precision"], backend=cfg.get("backend"),
                           keep_hangul=bool(cfg.get("keep_hangul", False)))
    ids = [doc_id for rows in index.store.iter_documents() for doc_id, _ in rows]
    docs = index.store.documents(ids)
    entries = [str(docs[d][1].get("faq_id", d)) for d in ids]
    matrix = encoder.encode([docs[d][0] for d in ids], warn=False)
    # As a rebuild at that layer would make it: whitened where the index's whitening setting says so.
    transform, _ = whitened.fit_for({**cfg, "layer": layer}, matrix, lambda: encoder, len(matrix),
                                    lambda: whitened.corpus_sentences(index.store))
    matrix = whitened.apply(transform, matrix)
    names = sorted(set(entries))
    column = {e: i for i, e in enumerate(names)}
    owner = np.array([column[e] for e in entries])
    out = []
    for start in range(0, len(labelled), 256):
        chunk = labelled[start : start + 256]
        scores = whitened.apply(transform, encoder.encode([q.question for q in chunk], warn=False)) @ matrix.T
        per_entry = np.full((len(chunk), len(names)), -np.inf, dtype=np.float32)
        np.maximum.at(per_entry.T, owner, scores.T)  # best question of each entry
        order = np.argsort(-per_entry, axis=1)
        for row, item in enumerate(chunk):
            first = order[row, 0]
            second = per_entry[row, order[row, 1]] if len(names) > 1 else -1.0
            correct = None if item.faq_id is None else names[first] == item.faq_id
            out.append(Observation(float(per_entry[row, first]), float(second), correct))
    return out


def fit_questions_into(index: Index, labelled: Sequence[LabelledQuestion]) -> int:
    """Record the questions' texts for the index's whitening and refit it with them, where the index
    whitens (``index.storage.query_sample``); returns how many were recorded (0: it does not whiten, nothing
    changed)."""
    if not (index.config.get(whitened.FIT) or {}).get("whiten"):
        return 0
    return record_queries(index, [q.question for q in labelled])


def calibrate_index(path: str | os.PathLike, labelled: Sequence[LabelledQuestion], target: float = 0.95,
                    apply: bool = False, note: Callable[[str], None] | None = None,
                    fit_questions: bool = True, weigh_answers: bool = True) -> CalibrationReport:
    """Choose and store the threshold, margin and answer weight (``faq_answers.WEIGHTS``; only 0
    unless ``weigh_answers``) that reach ``target`` precision on ``labelled`` answering the most
    (first refitting a whitened index with their texts, unless ``fit_questions`` is False)."""
    if not 0 < target <= 1:
        raise SemsearchError(f"the target precision must be above 0 and at most 1 (got {target})")
    if not any(q.faq_id is not None for q in labelled):
        raise SemsearchError("calibration needs in-domain questions: lines with the faq_id that answers them")
    index = Index.open(path)
    fitted = fit_questions_into(index, labelled) if fit_questions else 0
    if fitted and note:
        note(f"refitted the whitening with the {fitted} calibration questions (their texts, not their labels)")
    faq = FAQ(Searcher(index))
    layer = int(index.config["layer"])
    weight, best, top, per_weight = best_weight(observe_weights(faq, labelled, WEIGHTS if weigh_answers else (0.0,)),
                                                target)
    calibration = None
    if best is not None:
        calibration = Calibration.from_rates(best, target, index.config, answer_weight=weight)
        index.set_setting(SETTING, calibration.as_dict())
    report = CalibrationReport(target, layer, calibration, top, fitted_questions=fitted,
                               answered_by_weight=per_weight)
    if best is not None and best.answered >= ANSWERS_ENOUGH:
        return report
    for other in (L for L in LAYERS if L != layer):
        if note:
            reason = "cannot reach" if best is None else f"answers only {best.answered:.0%} of in-domain questions at"
            note(f"layer {layer} {reason} precision {target}; measuring layer {other} on the same questions")
        alt_best, alt_top = choose(observe_layer(index, other, labelled), target)
        report.alternatives.append(Alternative(other, alt_best, alt_top,
                                               f"semsearch index rebuild --index {path} --layer {other}"))
    current = best.answered if best is not None else 0.0
    winners = sorted((a for a in report.alternatives if a.best and a.best.answered > current),
                     key=lambda a: -a.best.answered)
    if apply and winners:
        if note:
            note(f"rebuilding the index with layer {winners[0].layer}, then calibrating again")
        index.rebuild(layer=winners[0].layer)
        again = calibrate_index(path, labelled, target, apply=False, note=note, fit_questions=fit_questions,
                                weigh_answers=weigh_answers)
        again.applied, again.alternatives = winners[0].command, report.alternatives
        return again
    return report
