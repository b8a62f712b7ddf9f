"""An index whose recorded model fingerprint no longer matches: same vectors, or another model?

A fingerprint can differ while the model is the same: the index was recorded by an older
fingerprint algorithm (which hashed the folder the model was loaded from and transformers'
config serialisation), or a library renamed a tensor. ``reverify`` then re-encodes a sample of
the stored passages and compares them with their stored vectors (``check.sample_agreement``):
if they agree the model is the same, and the index is re-stamped with the new fingerprint
(and the settings that name it, such as an FAQ calibration) under the write lock, on a
connection of its own so that the caller's read snapshot is not disturbed; else the model is
refused with the usual one-line error.
"""

from __future__ import annotations

import logging
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import IndexLockedError, SemsearchError
from .check import sample_agreement
from .lock import WriteLock
from .store import MetadataStore

if TYPE_CHECKING:  # pragma: no cover
    from ..model.config import EncoderConfig
    from ..model.encoder import Encoder

log = logging.getLogger("semsearch")
SAMPLE = 16  # stored passages re-encoded
TOLERANCE = 1e-3  # their cosine to the stored vectors must be at least 1 - this (as index check)


def reverify(path: Path, store: MetadataStore, encoder: "Encoder", recorded: "EncoderConfig", overlap: int) -> None:
    """Accept ``encoder`` for the index at ``path`` if it reproduces the stored vectors (and
    re-stamp the index), else raise ``ConfigMismatchError``."""
    agreement = sample_agreement(store, overlap, encoder, SAMPLE)
    if agreement.problems or agreement.below(TOLERANCE):
        lowest = agreement.min_cosine
        detail = "" if lowest is None else f"; re-encoded passages at cosine {lowest:.4f} of the stored vectors"
        raise recorded.changed_model(encoder.config, str(path), detail)
    log.info("model %s has a new fingerprint %s (recorded %s) but reproduces %d stored passage vectors; "
             "re-stamping index %s", recorded.model, encoder.fingerprint, recorded.fingerprint,
             agreement.sampled, path)
    restamp(path, str(recorded.fingerprint), str(encoder.fingerprint))


def restamp(path: Path, old: str, new: str) -> bool:
    """Record ``new`` where the index recorded ``old``; False when skipped (the lock is taken, the
    folder is read-only): a later open verifies and re-stamps again."""
    try:
        with WriteLock(path), closing(MetadataStore.connect(path)) as store, store.transaction():
            current = store.get_info()
            if current.get("model_fingerprint") != old:
                return False  # re-stamped or rebuilt meanwhile
            changed = {"model_fingerprint": new}
            for key, value in current.items():
                if isinstance(value, dict) and value.get("model_fingerprint") == old:
                    changed[key] = {**value, "model_fingerprint": new}
            store.set_info(changed)
            return True
    except (IndexLockedError, OSError, sqlite3.Error, SemsearchError) as exc:
        log.info("index %s not re-stamped now (%s)", path, exc)
        return False
