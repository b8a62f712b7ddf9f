"""Durable file writes shared by every layer that writes index files.

``fsync_file`` and ``fsync_dir`` flush a file or a folder's entries to disk;
``write_atomically`` writes a file at a temporary name, renames it into place
and flushes the folder, so a reader never sees a half-written file. The
vector backends (``index.ann``), the storage engine (``index.storage``) and
the lexical index (``index.lexical``) all write through these; this module
imports nothing from the package.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, write: Callable[[Path], None]) -> Path:
    """``write`` a file at a temporary name next to ``path`` (it must fsync it), then rename it into
    place and fsync the folder; the temporary file is removed on any failure."""
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path
