"""Contextual similarity and the layer report: the tutorial's "bank" (and 배) and histogram steps.

``similar_words`` takes (sentence, word) pairs, finds each word in its
sentence by its characters (case-insensitively, the N-th occurrence that
starts at a token boundary; never a token position typed by hand), gives
each occurrence the vector of the tokens it covers, and returns the cosine
matrix of those vectors next to the cosine matrix of the sentences' own
vectors (the encoder's sentence vector, layer −2 by default).

``layer_report`` summarises, layer by layer, the values of the texts' token
vectors (range and spread: the tutorial's histogram) and, when there are two
texts or more, how the first text's similarity to each other one changes
from layer to layer (mean of the real tokens, as the sentence vector).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..errors import SemsearchError
from .words import WORD_LAYERS, Token, check_layers, combine_layers

if TYPE_CHECKING:  # pragma: no cover
    from .encoder import Encoder


@dataclass(frozen=True)
class Occurrence:
    """A word found in its sentence: its span and the tokens (indexes) it covers."""

    sentence: str
    word: str
    start: int
    end: int
    token_indexes: tuple[int, ...]
    pieces: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"sentence": self.sentence, "word": self.word, "start": self.start, "end": self.end,
                "pieces": list(self.pieces)}


@dataclass(frozen=True)
class SimilarityReport:
    items: list[Occurrence]
    matrix: np.ndarray  # cosine of the word vectors
    sentence_matrix: np.ndarray  # cosine of the sentence vectors
    layers: tuple[int, ...]
    combine: str
    sentence_layer: int

    def as_dict(self) -> dict[str, Any]:
        return {"items": [o.as_dict() for o in self.items], "matrix": _rounded(self.matrix),
                "sentence_matrix": _rounded(self.sentence_matrix), "layers": list(self.layers),
                "combine": self.combine, "sentence_layer": self.sentence_layer}


def find_word(tokens: Sequence[Token], sentence: str, word: str, occurrence: int = 1,
              where: str = "the sentence") -> Occurrence:
    """The ``occurrence``-th (1-based) case-insensitive match of ``word`` in ``sentence`` that starts
    where a token starts, with the tokens it overlaps."""
    if not word.strip():
        raise SemsearchError(f"the word to find in {where} is empty")
    if occurrence < 1:
        raise SemsearchError("--occurrence counts from 1")
    starts = {t.start for t in tokens if not t.special}
    target = word.strip()
    n = len(target)
    found = [i for i in sorted(starts) if sentence[i:i + n].casefold() == target.casefold()]
    if not found:
        raise SemsearchError(f"word {word!r} not found in {where}: {sentence!r}")
    if occurrence > len(found):
        raise SemsearchError(f"{where} has {len(found)} occurrence(s) of {word!r}, not {occurrence}")
    start = found[occurrence - 1]
    end = start + n
    rows = tuple(i for i, t in enumerate(tokens) if not t.special and t.start < end and t.end > start)
    return Occurrence(sentence, sentence[start:end], start, end, rows, tuple(tokens[i].token for i in rows))


def similar_words(encoder: "Encoder", pairs: Sequence[tuple[str, str]], occurrence: int | Sequence[int] = 1,
                  layers: Sequence[int] = WORD_LAYERS, combine: str = "sum") -> SimilarityReport:
    """The cosine matrix of each (sentence, word) pair's word vector, and of the sentences.
    ``occurrence``: which match of each word to take (1-based), one for every pair or one per pair."""
    if len(pairs) < 2:
        raise SemsearchError("give at least two SENTENCE WORD pairs to compare")
    occurrences = [occurrence] * len(pairs) if isinstance(occurrence, int) else list(occurrence)
    if len(occurrences) == 1:
        occurrences *= len(pairs)
    if len(occurrences) != len(pairs):
        raise SemsearchError(f"give one --occurrence for every pair or one per pair ({len(pairs)}), "
                             f"not {len(occurrences)}")
    for i, (sentence, _) in enumerate(pairs, 1):
        if not sentence.strip():
            raise SemsearchError(f"sentence {i} is empty")
    model = encoder.hidden_states
    indexes = check_layers(layers, model.num_layers)
    items, rows = [], []
    seen: dict[str, tuple[list[Token], np.ndarray]] = {}  # each distinct sentence runs the model once
    for i, ((sentence, word), nth) in enumerate(zip(pairs, occurrences), 1):
        if sentence not in seen:
            tokens = encoder.tokens(sentence)
            seen[sentence] = tokens, combine_layers(model.run([t.id for t in tokens], max(indexes)), indexes, combine)
        tokens, vectors = seen[sentence]
        found = find_word(tokens, sentence, word, nth, where=f"sentence {i}")
        if not found.token_indexes:  # cut off by the model window
            raise SemsearchError(f"word {word!r} of sentence {i} lies beyond the model window")
        items.append(found)
        rows.append(vectors[list(found.token_indexes)].mean(axis=0))
    sentences = encoder.encode([s for s, _ in pairs], warn=False)
    return SimilarityReport(items, _cosines(np.stack(rows)), sentences @ sentences.T, tuple(layers), combine,
                            encoder.layer)


@dataclass(frozen=True)
class LayerStats:
    """The token values of one layer: range, spread and (with two texts or more) the cosine of the
    first text's mean token vector to each other text's."""

    layer: int  # 0 = embeddings
    minimum: float
    maximum: float
    mean: float
    std: float
    p01: float
    p99: float
    similarity: tuple[float, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "min": round(self.minimum, 4), "max": round(self.maximum, 4),
                "mean": round(self.mean, 4), "std": round(self.std, 4), "p01": round(self.p01, 4),
                "p99": round(self.p99, 4), "similarity": [round(s, 4) for s in self.similarity]}


@dataclass(frozen=True)
class LayerReport:
    texts: list[str]
    layers: list[LayerStats]
    values: list[np.ndarray]  # every token value of each layer (for a histogram)
    sentence_layer: int  # the encoder's pooled layer, as an index (0 = embeddings)

    def as_dict(self) -> dict[str, Any]:
        return {"texts": self.texts, "sentence_layer": self.sentence_layer,
                "layers": [s.as_dict() for s in self.layers]}


def layer_report(encoder: "Encoder", texts: Sequence[str]) -> LayerReport:
    if not texts:
        raise SemsearchError("give at least one text")
    for i, text in enumerate(texts, 1):
        if not text.strip():
            raise SemsearchError(f"text {i} is empty")
    model = encoder.hidden_states
    states = [model.run([t.id for t in encoder.tokens(text)], model.num_layers) for text in texts]
    stats, values = [], []
    for layer in range(model.num_layers + 1):
        flat = np.concatenate([s[layer].ravel() for s in states])
        means = [s[layer].mean(axis=0) for s in states]
        means = [m / max(float(np.linalg.norm(m)), 1e-12) for m in means]
        sims = tuple(float(means[0] @ m) for m in means[1:])
        p01, p99 = np.percentile(flat, [1, 99])
        stats.append(LayerStats(layer, float(flat.min()), float(flat.max()), float(flat.mean()), float(flat.std()),
                                float(p01), float(p99), sims))
        values.append(flat)
    return LayerReport(list(texts), stats, values, encoder.layer_index)


def _cosines(vectors: np.ndarray) -> np.ndarray:
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return (unit @ unit.T).astype(np.float32)


def _rounded(matrix: np.ndarray) -> list[list[float]]:
    return [[round(float(x), 4) for x in row] for row in matrix]
