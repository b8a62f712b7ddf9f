"""Seals: the size and CRC-32 of every vector file of the committed state, recorded in SQLite.

A vector file (a FAISS base, its ``.ivfdata``, a delta) is named after its generation and checked
on load for its count and id sum, but a file whose vectors changed while its ids did not (a bit
flip in the payload, a file of another index with the same ids, a file of another generation
renamed) passes those checks and would answer with wrong scores. So every write that puts a
vector file in place records its seal, ``[bytes, crc32]``, in the ``info`` table under
``vector_seals`` in the same transaction as the generation it belongs to; a reader verifies the
seal before FAISS or numpy parses the file, and a file that does not match is treated as damaged
(never served: the vectors are rebuilt from SQLite). Reading a file to verify it costs one
sequential read (CRC-32 runs at several GB/s); an ``.ivfdata`` over ``CRC_UP_TO`` bytes, the
memory-mapped lists of an index larger than memory, is sealed by its size only, so that opening
it stays cheap. Files without a seal (indexes from before seals, a new index's empty base) are
checked as before.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..ann.base import DATA_SUFFIX
from ..errors import IndexCorruptError

SETTING = "vector_seals"
CRC_UP_TO = 256 << 20  # a data file larger than this is sealed by its size only
CHUNK = 1 << 22


def crc_of(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            crc = zlib.crc32(block, crc)
    return crc


def seal_of(path: Path) -> list:
    """``[bytes, crc32]`` of the file at ``path`` (``[bytes, None]`` for a large data file)."""
    size = Path(path).stat().st_size
    big = Path(path).name.endswith(DATA_SUFFIX) and size > CRC_UP_TO
    return [size, None if big else crc_of(path)]


def sealed(folder: Path, names: Iterable[str], kept: Mapping[str, Any] | None = None) -> dict[str, list]:
    """The seals of the files ``names`` (those present) in ``folder``, added to ``kept``."""
    out = dict(kept or {})
    for name in names:
        path = Path(folder) / name
        if path.is_file():
            out[name] = seal_of(path)
    return out


def recorded(info: Mapping[str, Any]) -> dict[str, list]:
    """The seals ``info`` records (an unreadable value: none, so the files are checked as before)."""
    seals = info.get(SETTING)
    return seals if isinstance(seals, dict) else {}


def verify(path: Path, seals: Mapping[str, Any] | None) -> None:
    """IndexCorruptError when ``path`` does not match its recorded seal (no seal: nothing to check)."""
    seal = (seals or {}).get(Path(path).name)
    if not isinstance(seal, list) or len(seal) != 2:
        return
    path = Path(path)
    if not path.is_file():
        return  # the loader reports a missing file
    size, crc = seal
    actual = path.stat().st_size
    if actual != size:
        raise IndexCorruptError(f"{path} is damaged or not this index's file: {actual} bytes, where SQLite "
                                f"recorded {size} (truncated or extended); run `semsearch index repair`")
    if crc is not None and crc_of(path) != crc:
        raise IndexCorruptError(f"{path} is damaged or not this index's file: its CRC-32 differs from the one "
                                "SQLite recorded; run `semsearch index repair`")
