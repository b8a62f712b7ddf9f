"""Vector index backends: one FAISS index type per module, all behind ``base.VectorIndex``.

``flat`` (exact), ``hnsw``, ``ivf`` and ``ivfpq``; they are registered by name in
``index.options.VECTOR_BACKENDS`` and created through ``index.vectors``.
"""
