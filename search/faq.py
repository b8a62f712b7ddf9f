"""A FAQ helper for bots: match a customer's question to an answered one.

    faq = FAQ.build("faq-index", [("How do I reset my password?", "Use the 'Forgot password' link.")])
    reply = faq.answer("I forgot my login secret")
    if reply: print(reply.match.answer, reply.match.score)
    else: print("no confident answer; closest:", [m.question for m in reply.runners_up])

Each FAQ entry is one document: the question is the indexed text and the
answer lives in its metadata (``answer``, or the first of ``answers`` as in
BEIR-style FAQ corpora), so any index built by ``semsearch index build`` from
such a file works too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterable

from index.errors import SemsearchError
from index.indexer import Index

from .searcher import Searcher

# Scores are cosines of the index's own vectors; the right cut depends on the
# model and layer. With the default (all-MiniLM-L6-v2, layer -2) on StackFAQ,
# every correctly matched one of the first 400 rewordings scored >= 0.70 while 99.5% of off-topic
# STSb sentences scored below it (README, "FAQ bots"). Pass another threshold
# for another model or layer (about 0.4 suits layer -1).
DEFAULT_THRESHOLD = 0.7


@dataclass
class FAQMatch:
    id: str
    question: str
    answer: str | None
    score: float
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class FAQAnswer:
    """``match`` is the best entry, or None when its score is below the threshold."""

    question: str
    match: FAQMatch | None
    runners_up: list[FAQMatch]

    def __bool__(self) -> bool:
        return self.match is not None


def _entries(pairs: Iterable[Any]) -> Iterable[dict[str, Any]]:
    for n, pair in enumerate(pairs, start=1):
        if isinstance(pair, dict):
            question, answer = pair.get("question"), pair.get("answer")
            doc_id = str(pair.get("id", n))
            extra = dict(pair.get("metadata") or {})
        else:
            try:
                question, answer = pair
            except (TypeError, ValueError):
                raise SemsearchError(f"FAQ entry {n} is not a (question, answer) pair") from None
            doc_id, extra = str(n), {}
        if not isinstance(question, str) or not question.strip():
            raise SemsearchError(f"FAQ entry {doc_id} has no question")
        if not isinstance(answer, str):
            raise SemsearchError(f"FAQ entry {doc_id} has no answer text")
        yield {"id": doc_id, "text": question, "metadata": {**extra, "answer": answer}}


class FAQ:
    """Answer questions from an index of FAQ entries."""

    def __init__(self, index: str | os.PathLike | Index | Searcher, threshold: float = DEFAULT_THRESHOLD,
                 runners_up: int = 3):
        self.searcher = index if isinstance(index, Searcher) else Searcher(index)
        self.threshold = threshold
        self.runners_up = runners_up

    @classmethod
    def build(cls, path: str | os.PathLike, pairs: Iterable[Any], *, force: bool = False,
              threshold: float = DEFAULT_THRESHOLD, runners_up: int = 3, **config: Any) -> "FAQ":
        """Index ``(question, answer)`` pairs (or dicts with ``question``/``answer``/``id``) at ``path``."""
        index, _ = Index.build(path, _entries(pairs), force=force, **config)
        return cls(index, threshold=threshold, runners_up=runners_up)

    def answer(self, question: str) -> FAQAnswer:
        """The best FAQ entry for ``question`` if it scores at least the threshold, and the runners-up."""
        hits = self.searcher.search(question, k=1 + self.runners_up)
        matches = [
            FAQMatch(id=h.id, question=h.text, answer=_answer_of(h.metadata), score=h.score, metadata=h.metadata)
            for h in hits
        ]
        if matches and matches[0].score >= self.threshold:
            return FAQAnswer(question, matches[0], matches[1:])
        return FAQAnswer(question, None, matches[: self.runners_up])


def _answer_of(metadata: dict[str, Any]) -> str | None:
    if isinstance(metadata.get("answer"), str):
        return metadata["answer"]
    answers = metadata.get("answers")
    if isinstance(answers, list) and answers and isinstance(answers[0], str):
        return answers[0]
    return None
