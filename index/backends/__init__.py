"""Vector index backends: one FAISS index type per module, all behind ``base.VectorIndex``.

``flat`` (exact), ``hnsw``, ``ivf``, ``ivfpq`` and ``ivf-disk`` (IVF lists in a memory-mapped
file, for indexes larger than memory); they are registered by name in
``index.options.VECTOR_BACKENDS`` and created through ``index.vectors``.
"""
