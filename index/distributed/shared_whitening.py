"""One whitening for every shard of a sharded index: fitted on a sample pooled from all of them.

Scores from different shards are merged into one ranking, so every shard must
whiten with the same transform. ``ShardedIndex.route`` holds every shard's
writer; the shards' own refits are switched off there (``Writer.refit_shared``)
and ``refit_shared`` fits once, on a sample drawn from every shard in
proportion to its size, and writes the same transform (recorded with
``shared``) and the FAISS vectors it makes into each shard, one commit per
shard. Between two of those commits a reader may merge shards of the old and
the new transform; each shard alone is always consistent.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .. import options
from ..ann import registry
from ..model import fit_sentences
from ..model.whitening import MAX_SAMPLE
from ..storage import whitened
from ..storage.writer import Writer


def refit_shared(writers: Sequence[Writer], force: bool = False) -> bool:
    """Refit the shards' common whitening when due (the shards together have doubled since the fit,
    or the configuration changed), or always with ``force``; returns whether it refitted."""
    counts = [w.store.counts()[1] for w in writers]
    total = sum(counts)
    first = writers[0].store.get_info()
    if not (force or whitened.due(first, total) or any(
            (w.store.get_info().get(whitened.FIT) or {}).get("sha256") != (first.get(whitened.FIT) or {}).get("sha256")
            for w in writers[1:])):
        return False
    if whitened.SETTING not in first:
        return False
    dimension = int(first["dimension"])
    parts = [whitened.sample(w.store, dimension, n) for w, n in zip(writers, counts)]
    corpus = np.concatenate(parts) if parts else np.zeros((0, dimension), np.float32)
    if len(corpus) > MAX_SAMPLE:
        corpus = corpus[np.sort(np.random.default_rng(0).choice(len(corpus), MAX_SAMPLE, replace=False))]
    def sentences() -> list[str]:  # from every shard in proportion to its passages
        share = [max(1, round(fit_sentences.SIZE * n / max(total, 1))) if fit_sentences.SIZE > 0 else 0
                 for n in counts]
        return [t for w, k in zip(writers, share) for t in whitened.corpus_sentences(w.store, k)]

    transform, record = whitened.fit_for(first, corpus, writers[0].encoder, total, sentences)
    record.update(shared=True, shards=len(writers))
    for writer, n in zip(writers, counts):
        with writer.generations.commit() as commit:
            whitened.put(writer.store, transform, record)
            info = writer.store.get_info()
            commit.replace(registry.build(info.get("index_type", options.DEFAULT_INDEX_TYPE),
                                          whitened.index_dimension(info), n,
                                          whitened.faiss_vectors(writer.store, info),
                                          workdir=writer.generations.folder))
        writer.tune_when_due()
    return True
