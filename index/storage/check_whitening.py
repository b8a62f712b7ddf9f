"""``index check`` of the whitening: the stored transform is the recorded one, and FAISS holds its output.

Reads the stored arrays afresh (never the per-process cache), compares their
sha256 and shapes with the record, and looks up a sample of passages in the
FAISS index by id: each must hold ``transform(stored raw vector)`` (score 1
against itself within the tolerance) — a FAISS file written raw under a
transform, or whitened by another one, fails. Indexes with compressed codes
(approximate scores) are checked by the record alone.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..model.whitening import Whitening
from . import whitened
from .store import MetadataStore


def check_transform(store: MetadataStore, info: Mapping[str, Any], on_disk, sample: int = 20,
                    tolerance: float = 1e-3, seed: int = 0) -> tuple[list[str], list[str]]:
    """``(problems, notes)`` about the recorded whitening of the committed state."""
    fitted = info.get(whitened.FIT) or {}
    data = store.get_blob(whitened.BLOB)
    fix = "run `semsearch index rebuild` to fit it again"
    if not fitted.get("sha256"):
        notes = ["a whitening transform is stored but not recorded (ignored)"] if data is not None else []
        return [], notes
    if data is None:
        return [f"the whitening transform recorded ({fitted['sha256'][:12]}) is not stored; {fix}"], []
    try:
        transform = Whitening.from_bytes(data)
    except (ValueError, OSError, KeyError) as exc:
        return [f"the stored whitening transform is damaged ({exc}); {fix}"], []
    if transform.digest() != fitted["sha256"]:
        return [f"the stored whitening transform is not the one recorded (sha256 differs); {fix}"], []
    if transform.dimension_in != int(info["dimension"]) or transform.dimension != int(fitted.get("dimension", -1)):
        return [f"the stored whitening transform maps {transform.dimension_in}-d to {transform.dimension}-d vectors, "
                f"the index records {info['dimension']}-d to {fitted.get('dimension')}-d; {fix}"], []
    notes = []
    if whitened.due(info, store.counts()[1]):
        notes.append("the index has grown since its whitening was fitted; the next write refits it")
    if on_disk is None or on_disk.rerank or on_disk.dimension != transform.dimension:
        return [], notes
    ids = store.passage_ids()
    if len(ids) == 0:
        return [], notes
    picked = np.random.default_rng(seed).choice(ids, min(sample, len(ids)), replace=False)
    stored = store.vectors_of(picked, transform.dimension_in)
    off = 0
    for pid, raw in stored.items():
        scores, found = on_disk.search(transform.apply(raw)[None, :], 1, np.asarray([pid], dtype=np.int64))
        if found[0][0] != pid or abs(float(scores[0][0]) - 1.0) > tolerance:
            off += 1
    if off:
        return [f"{off} of {len(stored)} sampled FAISS vectors are not the stored vectors under the recorded "
                "whitening; run `semsearch index repair`"], notes
    return [], notes
