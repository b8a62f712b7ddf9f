"""How close a customer's question is to each candidate FAQ entry's answer: evidence a calibrated FAQ weighs.

A FAQ matches questions to questions. A rewording often shares more with the
entry's answer than with its question ("make text crossed out on GitHub"
against "Use ~~tildes around the words~~"), so ``semsearch faq calibrate``
also scores each candidate entry by ``question score + w * answer score``
(both cosines, the answer encoded as a query is, on the index's query path,
and whitened with the index's transform) for each ``w`` of ``WEIGHTS``, and
keeps the weight that answers the most in-domain questions at the target
precision (0, the question alone, where none does better). The weight is
part of the stored calibration; an uncalibrated FAQ scores questions alone.

Only the entries a question's search returned are rescored (``FAQ.depth``
documents). Answer vectors are encoded on first use and kept per process,
per transform and per answer text (``AnswerVectors``).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import TYPE_CHECKING, Sequence

import numpy as np

from index.storage.whitened import FIT as WHITENING_FIT

if TYPE_CHECKING:
    from index.storage.snapshot import Snapshot

WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)  # tried by the calibration, smallest first (ties keep the smaller)
CACHED = 50_000  # answer vectors kept per process (least recently used dropped first)


class AnswerVectors:
    """Answer texts as unit vectors comparable with a search's query vectors, encoded once per process,
    transform and text."""

    def __init__(self, limit: int = CACHED):
        self.limit = limit
        self._vectors: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()

    @staticmethod
    def state(snap: "Snapshot") -> str:
        """What the vectors depend on: the encoder's configuration and the whitening transform."""
        fit = snap.info.get(WHITENING_FIT) or {}
        return f"{snap.encoder_config.request()!r}|{fit.get('sha256') if fit.get('whiten') else 'raw'}"

    def vectors(self, snap: "Snapshot", texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), dimension)`` whitened unit vectors of ``texts`` in ``snap``'s state."""
        state = self.state(snap)
        keys = [(state, hashlib.sha256(t.encode("utf-8")).hexdigest()) for t in texts]
        missing = list(dict.fromkeys(t for t, k in zip(texts, keys) if k not in self._vectors))
        if missing:
            encoded = snap.whiten(snap.encoder.encode(missing, warn=False, bulk=False))
            for text, vector in zip(missing, encoded):
                self._vectors[(state, hashlib.sha256(text.encode("utf-8")).hexdigest())] = vector
        out = np.stack([self._vectors[k] for k in keys]) if keys else np.zeros((0, 0), np.float32)
        for k in keys:
            self._vectors.move_to_end(k)
        while len(self._vectors) > self.limit:
            self._vectors.popitem(last=False)
        return out
