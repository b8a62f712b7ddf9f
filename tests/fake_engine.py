"""A deterministic fake encoder for tests where storage, not the model, is the point.

``FakeEngine`` plugs into the writer's engine seam (``index.ingest.engines``, as
``bench/build.py --storage`` does): every document is one passage whose vector is seeded by its
text, so the same text always gets the same unit vector and nothing is encoded.
"""

from __future__ import annotations

import hashlib

import numpy as np

from index.ingest.passages import EncodedDocument
from index.records import Passage


def fake_vector(text: str, dimension: int) -> np.ndarray:
    """A unit vector seeded by the text (same text, same vector: ties behave as with a model)."""
    seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
    v = np.random.default_rng(seed).standard_normal(dimension).astype(np.float32)
    return v / np.linalg.norm(v)


class FakeEngine:
    """The writer's engine seam: one passage a document, a seeded vector."""

    def encode_chunks(self, chunks, settings, progress=None):
        for chunk in chunks:
            yield chunk, {doc_id: EncodedDocument([Passage(0, 0, len(text), text)],
                                                  fake_vector(text, settings.dimension)[None, :])
                          for doc_id, text in chunk.texts.items()}
