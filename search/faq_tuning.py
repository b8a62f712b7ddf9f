"""Calibrating a FAQ index on labelled questions, and measuring the alternatives when it falls short.

``calibrate_index`` observes each labelled question's two best FAQ entries,
chooses the threshold and margin that answer the most in-domain questions at
the target precision (``calibration.choose``) and stores them in the index.
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
from index.storage import whitened

from .calibration import SETTING, Calibration, Observation, Rates, choose
from .faq import FAQ
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

    @property
    def reached(self) -> bool:
        return self.calibration is not None

    def as_dict(self) -> dict[str, Any]:
        return {"target": self.target, "layer": self.layer, "reached": self.reached,
                "calibration": self.calibration.as_dict() if self.calibration else None,
                "most_precise": self.top.as_dict(), "alternatives": [a.as_dict() for a in self.alternatives],
                "applied": self.applied, "fitted_questions": self.fitted_questions}


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


def observe_faq(faq: FAQ, labelled: Sequence[LabelledQuestion], batch: int = 128) -> list[Observation]:
    out = []
    for start in range(0, len(labelled), batch):
        chunk = labelled[start : start + batch]
        for item, (best, top, second) in zip(chunk, faq.top_two([q.question for q in chunk])):
            out.append(Observation(top, second, None if item.faq_id is None else best == item.faq_id))
    return out


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
    transform, _ = whitened.fit_for({**cfg, "layer": layer}, matrix, lambda: encoder, len(matrix))
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
    whitens; returns how many were recorded (0: it does not whiten, nothing changed)."""
    config = index.config  # one read of the index's settings
    if not (config.get(whitened.FIT) or {}).get("whiten"):
        return 0
    texts = sorted({q.question.strip() for q in labelled if q.question.strip()})
    if len(texts) > whitened.MAX_QUESTIONS:  # a fixed sample: the same questions give the same fit
        picked = np.random.default_rng(0).choice(len(texts), whitened.MAX_QUESTIONS, replace=False)
        texts = [texts[i] for i in sorted(picked)]
    if config.get(whitened.QUESTIONS) != texts:
        with index.session() as writer:
            writer.record({whitened.QUESTIONS: texts})
            writer.refit(force=True)
    return len(texts)


def calibrate_index(path: str | os.PathLike, labelled: Sequence[LabelledQuestion], target: float = 0.95,
                    apply: bool = False, note: Callable[[str], None] | None = None,
                    fit_questions: bool = True) -> CalibrationReport:
    """Choose and store the threshold and margin that reach ``target`` precision on ``labelled``
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
    best, top = choose(observe_faq(faq, labelled), target)
    calibration = None
    if best is not None:
        calibration = Calibration.from_rates(best, target, index.config)
        index.set_setting(SETTING, calibration.as_dict())
    report = CalibrationReport(target, layer, calibration, top, fitted_questions=fitted)
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
        again = calibrate_index(path, labelled, target, apply=False, note=note, fit_questions=fit_questions)
        again.applied, again.alternatives = winners[0].command, report.alternatives
        return again
    return report
