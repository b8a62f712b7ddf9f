"""The corpus's own sentences, a sample of them for the whitening fit.

Queries are sentences; documents often are not (an abstract, a manual page,
a passage of 250 tokens). Whitening fitted on the passages' vectors alone
fits the document side; the generated background (``background``) adds
ordinary sentences, but not the corpus's words. So the fit also pools a
sample of sentences cut from the stored passages: sentence-sized texts in
the corpus's own vocabulary, the nearest thing to its queries that an index
holds without a single query. On SciFact (whitened layer -2 of the embedded
model) they lifted nDCG@10 from 0.518 to 0.564, about what 807 real training
claims recorded as sample queries gave (0.570). The fit counts the background
at least as much as these sentences (``storage.whitened.fit_for``): alone
they pulled it away from plain questions to technical text (help pages);
``docs/quality.md`` has the measurements.

A sentence here is a stretch of a passage ending in ``.``, ``!``, ``?`` (or
``。``) before a space and a capital letter, digit or bracket; at least
``MIN_WORDS`` words and not the whole passage (a corpus of one-sentence
passages adds nothing). A passage cut from a longer document may start or
end inside a sentence: its first piece counts only when it does not start
with a lower-case letter, its last only when it ends like a sentence. The
sample is the same for the same texts on every machine (a fixed seed).
"""

from __future__ import annotations

import re
from typing import Iterable

import numpy as np

SIZE = 2000  # sentences pooled into a fit at most
MIN_WORDS = 5
MAX_WORDS = 80  # longer "sentences" are lists or tables that the splitter did not cut
SEED = 23

_CLOSES = (".", "!", "?", "。", '."', ".'", '!"', '?"', ".)")
_END = re.compile(r"(?<=[.!?。])\s+(?=[\"'(\[]?[A-Z0-9\u00c0-\u024f\u0400-\u04ff\uac00-\ud7a3])")


def split(text: str) -> list[str]:
    """The sentences of ``text`` (stripped; empty ones dropped)."""
    return [s.strip() for s in _END.split(text) if s.strip()]


def sample(texts: Iterable[str], limit: int = SIZE, seed: int = SEED) -> list[str]:
    """At most ``limit`` distinct sentences of ``texts`` (in the order first met, then a random
    sample of them when there are more), each of ``MIN_WORDS`` to ``MAX_WORDS`` words and not a
    whole text."""
    found: dict[str, None] = {}
    for text in texts:
        whole = text.strip()
        pieces = split(text)
        for i, sentence in enumerate(pieces):
            if i == 0 and sentence[0].islower():  # the tail of a sentence the passage was cut from
                continue
            if i == len(pieces) - 1 and not sentence.endswith(_CLOSES):  # cut before its end
                continue
            if MIN_WORDS <= len(sentence.split()) <= MAX_WORDS and sentence != whole:
                found.setdefault(sentence)
    sentences = list(found)
    if len(sentences) <= limit:
        return sentences
    rows = np.sort(np.random.default_rng(seed).choice(len(sentences), limit, replace=False))
    return [sentences[i] for i in rows]
