"""The storage engine: one index folder, SQLite as the source of truth, FAISS files per generation.

Owns: ``folder`` (made aside and renamed into place, swapped, recovered),
``store`` + ``migrations`` (every SQL statement, numbered schema versions),
``lock`` (the single writer), ``generations`` + ``deltas`` (which FAISS base and
delta files belong to a committed generation), ``snapshot`` (what a reader
sees of one generation), ``seals`` (the size and CRC-32 of each vector file,
recorded in SQLite), ``info_values`` (the ``info`` table's values checked as
they are read), ``writer`` (add, delete, rebuild under the lock, in
commit-sized transactions), ``check`` (verify and repair), and the operator's side:
``listing`` (documents read back), ``backup`` (one committed generation copied, restore),
``space`` (space given back after deletes, the WAL's bound, compact) and ``operations`` (a base
of ``Index`` that offers them); ``whitened`` (the recorded whitening, its fit and refit) with
``query_sample`` (sample query texts pooled into that fit).

May import: the foundation modules of ``index``, ``index.model``,
``index.ann`` and ``index.ingest``; never ``indexer``, ``lexical`` or
``distributed`` (they build on this).
"""
