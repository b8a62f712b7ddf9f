"""Vector search: the FAISS inner-product indexes behind one small base class.

Owns: ``base.VectorIndex`` (what every backend must do, atomic saving, search
threads), one backend per file (``flat`` exact, ``hnsw``, ``ivf``, ``ivfpq``,
``ivf_disk`` with its lists in a memory-mapped file), ``registry`` (an
``--index-type`` name to its class, ``auto``, build/load any type; backends are
registered by one line each in ``index.options.VECTOR_BACKENDS``) and
``tuning`` (search settings tuned to a recall target).

May import: the foundation modules of ``index`` (``errors``, ``options``,
``records``, ``files``) only. It knows vectors and ids, not documents, SQLite
or the model.
"""
