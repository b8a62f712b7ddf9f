"""A FAQ helper for bots: match a customer's question to an answered one, or say it is not sure.

    faq = FAQ.build("faq-index", [("How do I reset my password?", "Use the 'Forgot password' link.")])
    reply = faq.answer("I forgot my login secret")
    if reply: print(reply.match.answer, reply.match.score)
    else: print("not sure; closest:", [m.question for m in reply.runners_up])

Each question is one document: its text is the question, its metadata holds
the answer (``answer``, or the first of ``answers`` as in BEIR-style FAQ
corpora) and the entry it belongs to (``faq_id``), so an entry may have
several questions (paraphrases) and any index built by ``semsearch index
build`` from such a file works too. Whether the best match is good enough
is decided by the calibration stored in the index (``semsearch faq
calibrate``: a threshold and a top-1/top-2 margin measured on labelled
questions, and the weight of the question's closeness to each entry's
answer: ``faq_answers``); an uncalibrated index scores questions alone and
uses ``DEFAULT_THRESHOLD``, or ``WHITENED_DEFAULT_THRESHOLD`` where it
whitens its vectors.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from index.errors import SemsearchError
from index.indexer import Index
from index.storage.whitened import FIT as WHITENING_FIT

from .calibration import SETTING, Calibration, Observation, answers
from .faq_answers import AnswerVectors
from .searcher import Hit, Searcher, SearchRequest

# Uncalibrated default: with the embedded model at layer -2 on StackFAQ, every correctly matched
# one of the first 400 rewordings scored >= 0.70 (README, "FAQ bots"); it answers many off-topic
# questions too, which is why `semsearch faq calibrate` exists.
DEFAULT_THRESHOLD = 0.7
# Whitened vectors spread the scores: the same 0.70 answered 9.8 % of StackFAQ's held-out rewordings.
# 0.40 answers 72.5 % of them at 92.3 % precision and none of 600 off-topic STSb sentences (the
# embedded model at whitened layer -2; seed 0's test half of bench/faq.py, one-off measurement).
WHITENED_DEFAULT_THRESHOLD = 0.4
DOCUMENTS_PER_ENTRY = 4  # documents fetched per wanted entry: an entry's paraphrases are separate documents


@dataclass
class FAQMatch:
    id: str  # the FAQ entry
    question: str  # the entry's question that matched best
    answer: str | None
    score: float  # what the decision compares: question_score, plus the answer weight times answer_score
    metadata: dict[str, Any] = field(default_factory=dict)
    question_score: float | None = None  # cosine of the two questions (None: score is that)
    answer_score: float | None = None  # cosine of the question and the entry's answer, where weighed

    def as_dict(self) -> dict[str, Any]:
        out = {"id": self.id, "question": self.question, "answer": self.answer, "score": self.score}
        if self.answer_score is not None:
            out.update(question_score=self.question_score, answer_score=self.answer_score)
        return out


@dataclass(frozen=True)
class Policy:
    """When the FAQ answers: ``threshold`` and ``margin`` on the scores, weighing answers by ``answer_weight``."""

    threshold: float
    margin: float
    calibrated: bool
    answer_weight: float = 0.0


@dataclass
class FAQAnswer:
    """``match`` is the best entry when the FAQ is confident, else None (then see ``runners_up``)."""

    question: str
    match: FAQMatch | None
    runners_up: list[FAQMatch]
    calibrated: bool = False
    threshold: float = DEFAULT_THRESHOLD
    margin: float = 0.0
    answer_weight: float = 0.0

    def __bool__(self) -> bool:
        return self.match is not None

    @property
    def confident(self) -> bool:
        return self.match is not None

    def as_dict(self) -> dict[str, Any]:
        return {"question": self.question, "confident": self.confident,
                "match": self.match.as_dict() if self.match else None,
                "runners_up": [m.as_dict() for m in self.runners_up],
                "calibrated": self.calibrated, "threshold": self.threshold, "margin": self.margin,
                "answer_weight": self.answer_weight}


def faq_documents(pairs: Iterable[Any]) -> Iterable[dict[str, Any]]:
    """Index documents for FAQ entries: ``(question, answer)`` pairs, or dicts with ``question`` (or a
    list ``questions``), ``answer`` (or a list ``answers``: the first is given, all are evidence for
    a calibration that weighs answers), and optionally ``id`` and ``metadata``. One document per
    question; the first keeps the entry's id, paraphrases get ``<id>#2``, ``<id>#3``, ..."""
    for n, pair in enumerate(pairs, start=1):
        if isinstance(pair, dict):
            questions = pair.get("questions") or [pair.get("question")]
            answer, entry = pair.get("answer"), str(pair.get("id", n))
            extra = dict(pair.get("metadata") or {})
            several = pair.get("answers")
            if isinstance(several, list) and several and all(isinstance(a, str) for a in several):
                answer = several[0] if answer is None else answer
                extra["answers"] = list(several)
        else:
            try:
                question, answer = pair
            except (TypeError, ValueError):
                raise SemsearchError(f"FAQ entry {n} is not a (question, answer) pair") from None
            questions, entry, extra = [question], str(n), {}
        if not all(isinstance(q, str) and q.strip() for q in questions):
            raise SemsearchError(f"FAQ entry {entry} has no question")
        if not isinstance(answer, str):
            raise SemsearchError(f"FAQ entry {entry} has no answer text")
        for i, question in enumerate(questions, start=1):
            yield {"id": entry if i == 1 else f"{entry}#{i}", "text": question,
                   "metadata": {**extra, "answer": answer, "faq_id": entry}}


def default_threshold(info: Mapping[str, Any]) -> float:
    """The threshold of an uncalibrated index: its scores are spread where it whitens."""
    fitted = info.get(WHITENING_FIT) or {}
    return WHITENED_DEFAULT_THRESHOLD if fitted.get("sha256") else DEFAULT_THRESHOLD


class FAQ:
    """Answer questions from an index of FAQ entries.

    ``threshold`` (and ``margin``) override the index's calibration; by default the calibration
    stored by ``semsearch faq calibrate`` is used while the index's model, layer and pooling are
    those it was measured with, else ``default_threshold`` (lower where the index whitens).
    """

    def __init__(self, index: str | os.PathLike | Index | Searcher, threshold: float | None = None,
                 runners_up: int = 3, margin: float | None = None):
        self.searcher = index if isinstance(index, Searcher) else Searcher(index)
        self.threshold = threshold
        self.margin = margin
        self.runners_up = runners_up
        self.answer_vectors = AnswerVectors()

    @classmethod
    def build(cls, path: str | os.PathLike, pairs: Iterable[Any], *, force: bool = False,
              threshold: float | None = None, runners_up: int = 3, **config: Any) -> "FAQ":
        """Index FAQ entries (see :func:`faq_documents`) at ``path``."""
        index, _ = Index.build(path, faq_documents(pairs), force=force, **config)
        return cls(index, threshold=threshold, runners_up=runners_up)

    # --- the decision ---------------------------------------------------------------------
    def calibration(self, config: Mapping[str, Any] | None = None) -> Calibration | None:
        """The index's stored calibration, if it still holds for the index's configuration (``config``:
        already read)."""
        config = self.searcher.index.config if config is None else config
        stored = config.get(SETTING)
        if not stored:
            return None
        calibration = Calibration.from_dict(stored)
        return calibration if calibration.holds_for(config) else None

    def policy(self) -> Policy:
        """The threshold, margin and answer weight in force (a threshold given to the FAQ: questions alone)."""
        if self.threshold is not None:
            return Policy(self.threshold, self.margin or 0.0, False)
        config = self.searcher.index.config  # one read of the index's settings per decision
        calibration = self.calibration(config)
        if calibration is None:
            return Policy(default_threshold(config), self.margin or 0.0, False)
        return Policy(calibration.threshold, calibration.margin, True, calibration.answer_weight)

    @property
    def depth(self) -> int:
        """Documents to fetch for one question."""
        return (1 + self.runners_up) * DOCUMENTS_PER_ENTRY

    @staticmethod
    def entries(hits: Sequence[Hit]) -> list[FAQMatch]:
        """The FAQ entries of some hits, best first, each once (its best-matching question)."""
        seen: dict[str, FAQMatch] = {}
        for h in hits:
            entry = str(h.metadata.get("faq_id", h.id))
            if entry not in seen:
                seen[entry] = FAQMatch(id=entry, question=h.text, answer=answer_of(h.metadata), score=h.score,
                                       metadata=h.metadata)
        return list(seen.values())

    def weigh_answers(self, groups: Sequence[list[FAQMatch]], vectors: Sequence[np.ndarray],
                      weight: float) -> list[list[FAQMatch]]:
        """Each group of matches scored ``question_score + weight * answer_score`` and sorted by that,
        best first, all in one snapshot (``vectors``: each group's question's raw vector, as its search
        encoded it; ``answer_score``: the closest of the entry's answers, ``answers_of``; an entry
        without an answer is compared by its question)."""
        texts = [[answers_of(m.metadata) or [m.answer or m.question] for m in group] for group in groups]
        flat = [t for group in texts for answers in group for t in answers]
        if not flat:
            return [list(group) for group in groups]
        with self.searcher.index.snapshot() as snap:
            queries = snap.whiten(np.asarray(np.stack(vectors), dtype=np.float32))
            answer_vectors = self.answer_vectors.vectors(snap, flat)
        out, start = [], 0
        for group, group_texts, query in zip(groups, texts, queries):
            for m, answers_texts in zip(group, group_texts):
                m.answer_score = float((answer_vectors[start : start + len(answers_texts)] @ query).max())
                m.question_score = m.score if m.question_score is None else m.question_score
                m.score = m.question_score + weight * m.answer_score
                start += len(answers_texts)
            out.append(sorted(group, key=lambda m: -m.score))
        return out

    def decide(self, question: str, hits: Sequence[Hit], vector: np.ndarray | None = None) -> FAQAnswer:
        """The answer for ``question`` given its hits (best first) and, where the calibration weighs
        answers, its raw vector (``SearchOutcome.vector``; None: encoded again)."""
        return self.decide_many([(question, hits, vector)])[0]

    def decide_many(self, items: Sequence[tuple[str, Sequence[Hit], np.ndarray | None]]) -> list[FAQAnswer]:
        """:meth:`decide` for many ``(question, hits, vector)`` at once: one read of the policy, one
        snapshot for the answers' scores."""
        policy = self.policy()
        groups = [self.entries(hits) for _, hits, _ in items]
        if policy.answer_weight:
            weighed = [i for i, group in enumerate(groups) if group]
            missing = [i for i in weighed if items[i][2] is None]
            encoded = dict(zip(missing, self.searcher.encoder.encode([items[i][0] for i in missing], warn=False,
                                                                     bulk=False))) if missing else {}
            scored = self.weigh_answers([groups[i] for i in weighed],
                                        [encoded[i] if i in encoded else items[i][2] for i in weighed],
                                        policy.answer_weight) if weighed else []
            for i, group in zip(weighed, scored):
                groups[i] = group
        common = (policy.calibrated, policy.threshold, policy.margin, policy.answer_weight)
        out = []
        for (question, _, _), matches in zip(items, groups):
            top = matches[0].score if matches else float("-inf")
            second = matches[1].score if len(matches) > 1 else -1.0
            if matches and answers(Observation(top, second, None), policy.threshold, policy.margin):
                out.append(FAQAnswer(question, matches[0], matches[1 : 1 + self.runners_up], *common))
            else:
                out.append(FAQAnswer(question, None, matches[: self.runners_up], *common))
        return out

    def answer(self, question: str, where: Mapping[str, Any] | None = None) -> FAQAnswer:
        """The best FAQ entry for ``question`` if the FAQ is confident of it, and the runners-up
        (``where``: only entries whose metadata match that filter). Thresholds are on cosine
        scores, so FAQ searches are vector-only even on a hybrid index."""
        reply = self.answer_many([question], where=where)[0]
        if isinstance(reply, str):
            raise SemsearchError(reply)
        return reply

    def answer_many(self, questions: Sequence[str], where: Mapping[str, Any] | None = None) -> list[FAQAnswer | str]:
        """:meth:`answer` for many questions at once; an unusable question gets its error message."""
        outcomes = self.searcher.search_batch([SearchRequest(q, self.depth, where, hybrid=False) for q in questions])
        found = [o for o in outcomes if o.error is None]
        decided = iter(self.decide_many([(o.query, o.hits or [], o.vector) for o in found]))
        return [o.error if o.error is not None else next(decided) for o in outcomes]

    def candidates(self, questions: Sequence[str], answers_too: bool = True) -> list[list[FAQMatch]]:
        """Each question's candidate entries (``depth`` documents), best question first, with their
        ``question_score`` and, with ``answers_too``, ``answer_score`` (for calibration)."""
        outcomes = self.searcher.search_batch([SearchRequest(q, self.depth, hybrid=False) for q in questions])
        for outcome in outcomes:
            if outcome.error is not None:
                raise SemsearchError(f"question {outcome.query!r}: {outcome.error}")
        groups = [self.entries(outcome.hits or []) for outcome in outcomes]
        for m in (m for group in groups for m in group):
            m.question_score = m.score
        if answers_too:  # weight 0: the question ranking kept, the answer scores filled in
            groups = self.weigh_answers(groups, [outcome.vector for outcome in outcomes], 0.0)
        return groups


def read_faq(sources: Sequence[str], *, question_field: str = "question", answer_field: str = "answer",
             id_field: str | None = None, format: str | None = None, strict: bool = False,
             report: Any = None) -> list[dict[str, Any]]:
    """FAQ entries from JSONL (``{"id", "question", "answer"}`` by default), CSV or TSV files: rows that
    share an id are paraphrases of one entry and must share its answer."""
    from index.ingest.sources import read_documents

    entries: dict[str, dict[str, Any]] = {}
    for doc in read_documents(list(sources), id_field=id_field, text_field=question_field, format=format,
                              strict=strict, report=report):
        meta = dict(doc.metadata)
        answer = meta.pop(answer_field, None)
        if isinstance(answer, list) and answer and all(isinstance(a, str) for a in answer):
            if len(answer) > 1:  # every answer is evidence (faq_answers); the first is the one given
                meta["answers"] = list(answer)
            answer = answer[0]
        if not isinstance(answer, str) or not answer.strip():
            raise SemsearchError(f"FAQ entry {doc.id}: no answer (field {answer_field!r}); "
                                 "name the answer field with --answer-field")
        entry = entries.setdefault(doc.id, {"id": doc.id, "questions": [], "answer": answer, "metadata": meta})
        if entry["answer"] != answer:
            raise SemsearchError(f"FAQ entry {doc.id} is given two different answers; "
                                 "rows with one id are paraphrases of one question")
        if doc.text not in entry["questions"]:
            entry["questions"].append(doc.text)
    return list(entries.values())


def answers_of(metadata: dict[str, Any]) -> list[str]:
    """Every answer text of an entry (``answers`` as in BEIR-style FAQ corpora, else ``answer``)."""
    answers = metadata.get("answers")
    if isinstance(answers, list) and answers and all(isinstance(a, str) for a in answers):
        return list(answers)
    one = answer_of(metadata)
    return [one] if one is not None else []


def answer_of(metadata: dict[str, Any]) -> str | None:
    if isinstance(metadata.get("answer"), str):
        return metadata["answer"]
    answers = metadata.get("answers")
    if isinstance(answers, list) and answers and isinstance(answers[0], str):
        return answers[0]
    return None
