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
questions); an uncalibrated index uses ``DEFAULT_THRESHOLD``, or
``WHITENED_DEFAULT_THRESHOLD`` where it whitens its vectors.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from index.errors import SemsearchError
from index.indexer import Index
from index.storage.whitened import FIT as WHITENING_FIT

from .calibration import SETTING, Calibration, Observation, answers
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
    score: float
    metadata: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "question": self.question, "answer": self.answer, "score": self.score}


@dataclass
class FAQAnswer:
    """``match`` is the best entry when the FAQ is confident, else None (then see ``runners_up``)."""

    question: str
    match: FAQMatch | None
    runners_up: list[FAQMatch]
    calibrated: bool = False
    threshold: float = DEFAULT_THRESHOLD
    margin: float = 0.0

    def __bool__(self) -> bool:
        return self.match is not None

    @property
    def confident(self) -> bool:
        return self.match is not None

    def as_dict(self) -> dict[str, Any]:
        return {"question": self.question, "confident": self.confident,
                "match": self.match.as_dict() if self.match else None,
                "runners_up": [m.as_dict() for m in self.runners_up],
                "calibrated": self.calibrated, "threshold": self.threshold, "margin": self.margin}


def faq_documents(pairs: Iterable[Any]) -> Iterable[dict[str, Any]]:
    """Index documents for FAQ entries: ``(question, answer)`` pairs, or dicts with ``question`` (or a
    list ``questions``), ``answer``, and optionally ``id`` and ``metadata``. One document per
    question; the first keeps the entry's id, paraphrases get ``<id>#2``, ``<id>#3``, ..."""
    for n, pair in enumerate(pairs, start=1):
        if isinstance(pair, dict):
            questions = pair.get("questions") or [pair.get("question")]
            answer, entry = pair.get("answer"), str(pair.get("id", n))
            extra = dict(pair.get("metadata") or {})
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

    def policy(self) -> tuple[float, float, bool]:
        """``(threshold, margin, calibrated)`` in force."""
        if self.threshold is not None:
            return self.threshold, self.margin or 0.0, False
        config = self.searcher.index.config  # one read of the index's settings per decision
        calibration = self.calibration(config)
        if calibration is None:
            return default_threshold(config), self.margin or 0.0, False
        return calibration.threshold, calibration.margin, True

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

    def decide(self, question: str, hits: Sequence[Hit]) -> FAQAnswer:
        """The answer for ``question`` given its hits (best first)."""
        threshold, margin, calibrated = self.policy()
        matches = self.entries(hits)
        top = matches[0].score if matches else float("-inf")
        second = matches[1].score if len(matches) > 1 else -1.0
        if matches and answers(Observation(top, second, None), threshold, margin):
            return FAQAnswer(question, matches[0], matches[1 : 1 + self.runners_up], calibrated, threshold, margin)
        return FAQAnswer(question, None, matches[: self.runners_up], calibrated, threshold, margin)

    def answer(self, question: str, where: Mapping[str, Any] | None = None) -> FAQAnswer:
        """The best FAQ entry for ``question`` if the FAQ is confident of it, and the runners-up
        (``where``: only entries whose metadata match that filter). Thresholds are on cosine
        scores, so FAQ searches are vector-only even on a hybrid index."""
        return self.decide(question, self.searcher.search(question, k=self.depth, where=where, hybrid=False))

    def answer_many(self, questions: Sequence[str], where: Mapping[str, Any] | None = None) -> list[FAQAnswer | str]:
        """:meth:`answer` for many questions at once; an unusable question gets its error message."""
        outcomes = self.searcher.search_batch([SearchRequest(q, self.depth, where, hybrid=False) for q in questions])
        return [o.error if o.error is not None else self.decide(o.query, o.hits or []) for o in outcomes]

    def top_two(self, questions: Sequence[str]) -> list[tuple[str | None, float, float]]:
        """``(best entry, its score, the runner-up's score)`` of each question (for calibration)."""
        out = []
        for outcome in self.searcher.search_batch([SearchRequest(q, 2 * DOCUMENTS_PER_ENTRY, hybrid=False) for q in questions]):
            if outcome.error is not None:
                raise SemsearchError(f"question {outcome.query!r}: {outcome.error}")
            matches = self.entries(outcome.hits or [])
            out.append((matches[0].id if matches else None, matches[0].score if matches else -1.0,
                        matches[1].score if len(matches) > 1 else -1.0))
        return out


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
        if isinstance(answer, list) and answer and isinstance(answer[0], str):
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


def answer_of(metadata: dict[str, Any]) -> str | None:
    if isinstance(metadata.get("answer"), str):
        return metadata["answer"]
    answers = metadata.get("answers")
    if isinstance(answers, list) and answers and isinstance(answers[0], str):
        return answers[0]
    return None
