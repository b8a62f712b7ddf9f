"""The optional lexical index: BM25 over the stored documents, for hybrid retrieval.

Owns: ``bm25`` (a bm25s index per committed generation, written after the
commit and never served stale; the ``hybrid`` extra).

May import: the foundation modules of ``index`` and ``index.storage``.
"""
