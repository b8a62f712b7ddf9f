"""A read snapshot: one committed generation's vectors, encoder and store reads, together.

Readers (``Searcher``, ``FAQ``, the HTTP service) open one with
``Index.snapshot()`` and do a whole search inside it: the SQLite read
transaction pins one committed state, the vectors are those of its
generation, and the encoder is the one its recorded configuration names. A
writer committing meanwhile (a rebuild replaces every passage id, or the
model) can never pair FAISS ids of one state with rows, or query vectors, of
another. An index that whitens (``whitened``) holds whitened vectors in FAISS:
``search`` and ``rerank`` take the method's raw query vectors and whiten them
with the transform of the same generation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..ann.registry import SearchSettings, VectorIndex
from ..ann.tuning import Tuning
from ..errors import SemsearchError
from ..model.config import EncoderConfig
from ..model.whitening import Whitening
from ..records import Passage
from . import filters
from .migrations import FILTER_EPOCH
from . import whitened
from .store import MetadataStore


@dataclass
class Snapshot:
    """What a reader sees of one committed generation."""

    store: MetadataStore
    vectors: VectorIndex
    generation: int
    info: dict[str, Any]
    load_encoder: Callable[[Mapping[str, Any]], Any] = field(repr=False)

    @property
    def whitening(self) -> Whitening | None:
        """This generation's transform (None: FAISS holds the raw vectors), read in its transaction."""
        return whitened.transform(self.store, self.info)

    def whitened_encoder(self) -> tuple[Any, Whitening]:
        """``(encoder, transform)`` of this state; refused with one line when it is not whitened."""
        if self.whitening is None:
            raise SemsearchError(f"index {self.store.path.parent} is not whitened ({whitened.decision(self.info).reason})")
        return self.encoder, self.whitening

    def whiten(self, vectors: np.ndarray) -> np.ndarray:
        """Raw query vectors (one or a matrix) as this generation's FAISS vectors are made."""
        whitening = self.whitening
        return vectors if whitening is None else whitening.apply(vectors)

    @property
    def encoder_config(self) -> EncoderConfig:
        return EncoderConfig.from_info(self.info)

    @property
    def encoder(self):
        """The encoder of this generation's recorded configuration (loaded once per configuration)."""
        return self.load_encoder(self.info)

    @property
    def dimension(self) -> int:
        return int(self.info["dimension"])

    # --- vector search ------------------------------------------------------------------
    def allowed_ids(self, where: Mapping[str, Any] | None) -> np.ndarray | None:
        """Passage ids of the documents that the filter ``where`` matches (None: no filter; the
        language: ``filter_language``), cached while neither the generation nor the documents change."""
        if where is None:
            return None
        state = (self.generation, self.info.get(FILTER_EPOCH))
        return filters.allowed_passage_ids(self.store, state, dict(where) if isinstance(where, Mapping) else where)

    @property
    def tuning(self) -> Tuning | None:
        """The search settings tuned for this vector index (``index.ann.tuning``), if any."""
        tuned = Tuning.from_info(self.info.get("search_tuning"))
        return tuned if tuned is not None and tuned.kind == self.vectors.kind else None

    def settings(self, given: SearchSettings | None) -> SearchSettings:
        """``given`` settings, with the tuned ones where it says nothing (None)."""
        given = given or SearchSettings()
        tuning = self.tuning
        tuned = tuning.search_settings() if tuning is not None else SearchSettings()
        return SearchSettings(**{f: getattr(given, f) if getattr(given, f) is not None else getattr(tuned, f)
                                 for f in ("ef_search", "nprobe", "rerank")})

    def candidates(self, k: int) -> int:
        """How many passages to fetch to find ``k`` documents (the tuned re-ranking depth included)."""
        depth = self.settings(None).rerank if self.vectors.rerank else None
        return max(self.vectors.candidates(k), -(-(depth or 0) * k // 10))

    def search(self, vector: np.ndarray, n: int, allowed: np.ndarray | None,
               settings: SearchSettings | None) -> list[tuple[int, float]]:
        """The ``n`` nearest passages to one query vector, as ``(passage id, score)``, best first;
        ``settings`` override the tuned ones."""
        scores, ids = self.vectors.search(self.whiten(vector)[None, :], n, allowed, self.settings(settings))
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]

    @property
    def needs_rerank(self) -> bool:
        """True when the vector index's scores are approximate (compressed codes)."""
        return self.vectors.rerank

    def rerank(self, vector: np.ndarray, ids: Sequence[int]) -> list[tuple[int, float]]:
        """Exact scores from the stored float32 vectors, best first."""
        stored = self.store.vectors_of(ids, len(vector))
        query = self.whiten(vector)
        scored = [(pid, float(self.whiten(stored[pid]) @ query)) for pid in ids if pid in stored]
        return sorted(scored, key=lambda t: -t[1])

    # --- rows -------------------------------------------------------------------------
    def passages(self, ids: Sequence[int]) -> dict[int, tuple[str, Passage]]:
        """``passage id -> (document id, passage)``."""
        return self.store.passages(ids)

    def documents(self, ids: Sequence[str]) -> dict[str, tuple[str, dict]]:
        """``document id -> (text, metadata)``."""
        return self.store.documents(ids)
