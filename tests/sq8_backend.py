"""A vector backend written outside the package, to show what adding one takes.

``IndexScalarQuantizer`` with 8-bit codes (a quarter of flat's memory), in an
``IndexIDMap2``. Registering it is one line in ``index.options.VECTOR_BACKENDS``
(``tests/test_backends.py`` does that with monkeypatch); nothing else in the
package changes.
"""

from __future__ import annotations

import faiss

from index.ann.base import VectorIndex, id_map_ids
from index.ann.ivf import training_sample


class SQ8Index(VectorIndex):
    kind = "sq8"
    min_training = 256
    rerank = True  # 8-bit scores: let the searcher re-rank candidates with the stored vectors

    @classmethod
    def build(cls, dimension, n, batches, seed=0, workdir=None):
        inner = faiss.index_factory(dimension, "SQ8", faiss.METRIC_INNER_PRODUCT)
        inner.train(training_sample(batches, n, 10_000, seed))
        return cls(faiss.IndexIDMap2(inner)).add_batches(batches)

    @classmethod
    def owns(cls, index):
        return isinstance(index, faiss.IndexIDMap2) and isinstance(
            faiss.downcast_index(index.index), faiss.IndexScalarQuantizer)

    def stored_ids(self):
        return id_map_ids(self.index)
