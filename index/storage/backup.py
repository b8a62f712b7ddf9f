"""``index backup``: a consistent copy of one committed generation, taken while the index serves.

Copying the folder file by file while a writer commits can pair a database of one generation
with vector files of another. A backup instead opens one read transaction on the source
database (it pins one committed generation), opens the vector files that generation is made of
(its base, the base's data file, its deltas; an open file survives a writer removing it after
its next commit), copies the database through SQLite's online backup API inside that same
read transaction, and then copies the opened files. A writer that removed a file between the
pin and its opening makes the backup start again (at most ``ATTEMPTS`` times); if it never
catches a complete set, the copy holds the database alone and its vectors are rebuilt from the
stored ones on first open (``generations``), which loses nothing. A BM25 folder of that
generation (hybrid indexes) is copied when present; without it the copy builds one when needed.

The copy is made in a hidden staging folder next to the destination and renamed into place,
so a destination never holds half a backup. The backup folder is an ordinary index; ``restore``
(``semsearch index restore``) copies it the same way and swaps it in place of an index as
``index build --force`` does.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from contextlib import ExitStack, closing
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..ann.base import DATA_SUFFIX
from ..errors import IndexNotFoundError, SemsearchError
from ..files import fsync_dir, fsync_file
from . import folder
from .deltas import delta_name
from .lock import WriteLock
from .store import DB_NAME

ATTEMPTS = 20
BM25_FOLDER = "bm25-{generation}"  # the lexical layer's folder of one generation (index.lexical.bm25)


@dataclass
class BackupResult:
    """What a backup copied: the generation, its documents, the files and bytes, the time taken."""

    source: str
    destination: str
    generation: int
    documents: int
    files: list[str]
    bytes: int
    seconds: float
    vectors_copied: bool = True  # False: the copy rebuilds its vectors from the stored ones on open


def backup(source: Path, destination: Path, force: bool = False) -> BackupResult:
    """Copy the committed generation of the index at ``source`` to ``destination`` (a new folder,
    or with ``force`` an index there, replaced when the copy is complete)."""
    started = time.monotonic()
    source, destination = Path(source), Path(destination)
    if not folder.is_index(source):
        raise IndexNotFoundError(f"no semsearch index at {source}")
    if destination.resolve() == source.resolve():
        raise SemsearchError("the backup destination is the index itself; give another folder")
    folder.check_destination(destination, force)
    with folder.staging(destination, "creating") as staging:
        folder.make_marked(staging)
        generation, documents, names, complete = copy_generation(source, staging)
        fsync_dir(staging)
        size = sum(p.stat().st_size for p in staging.rglob("*") if p.is_file())
        folder.put_in_place(staging, destination)
    return BackupResult(source=str(source), destination=str(destination), generation=generation,
                        documents=documents, files=names, bytes=size, seconds=time.monotonic() - started,
                        vectors_copied=complete)


def copy_generation(source: Path, target: Path) -> tuple[int, int, list[str], bool]:
    """Copy one committed generation of ``source`` into the empty folder ``target``; returns the
    generation, its document count, the names copied, and whether its vector files were."""
    for attempt in range(ATTEMPTS):
        last = attempt == ATTEMPTS - 1
        with closing(sqlite3.connect(str(source / DB_NAME), timeout=30.0, isolation_level=None)) as conn, \
                ExitStack() as files:
            conn.execute("PRAGMA busy_timeout = 30000")
            conn.execute("BEGIN")
            try:
                info = {k: json.loads(v) for k, v in conn.execute("SELECT key, value FROM info")}
                generation = int(info.get("generation", 0))
                opened = open_chain(source, info, generation, files)
                if opened is None and not last:
                    continue  # a writer removed a file of this generation: pin a newer one
                with closing(sqlite3.connect(str(target / DB_NAME))) as copy:
                    conn.backup(copy)
                documents = int(conn.execute("SELECT count(*) FROM documents").fetchone()[0])
            finally:
                conn.execute("ROLLBACK")
            names = [DB_NAME]
            for name, handle in (opened or {}).items():
                copy_file(handle, target / name)
                names.append(name)
            fsync_file(target / DB_NAME)
            return generation, documents, names, opened is not None
    raise AssertionError("unreachable")  # pragma: no cover - the last attempt always returns


def restore(backup_path: Path, path: Path, wait: bool | float = False) -> BackupResult:
    """Put the index backed up at ``backup_path`` in place of the index at ``path`` (or at a new
    ``path``), as ``index build --force`` replaces one: the copy is made aside, then swapped in under
    the old index's write lock (waiting for a writer with ``wait``), so readers see the old index or
    the restored one, whole, and writers that waited get ``IndexReplacedError``."""
    backup_path, path = Path(backup_path), Path(path)
    if not folder.is_index(backup_path):
        raise IndexNotFoundError(f"no semsearch index (backup) at {backup_path}")
    if not folder.is_index(path):
        return backup(backup_path, path)
    with WriteLock(path, wait=wait), folder.staging(path, "building") as staging:
        result = backup(backup_path, staging)
        folder.mark(staging)
        folder.replace_index(staging, path)
    result.destination = str(path)
    return result


def open_chain(source: Path, info: dict, generation: int, files: ExitStack) -> dict[str, BinaryIO] | None:
    """The files of ``generation``, opened (``name -> file``); None when one is already gone."""
    base = int(info.get("vectors_base", generation))
    names = [f"vectors-{base}.faiss"] + [delta_name(g) for g in range(base + 1, generation + 1)]
    optional = [f"vectors-{base}{DATA_SUFFIX}"]
    lexical = source / BM25_FOLDER.format(generation=generation)
    if lexical.is_dir():
        optional += [str(p.relative_to(source)) for p in sorted(lexical.rglob("*")) if p.is_file()]
    opened: dict[str, BinaryIO] = {}
    for name in names + optional:
        try:
            opened[name] = files.enter_context(open(source / name, "rb"))
        except FileNotFoundError:
            if name in names:
                return None
            if name.startswith("bm25-"):  # the BM25 folder went half way: copy none of it
                opened = {k: v for k, v in opened.items() if not k.startswith("bm25-")}
                break
    return opened


def copy_file(handle: BinaryIO, to: Path) -> None:
    to.parent.mkdir(parents=True, exist_ok=True)
    with open(to, "wb") as out:
        shutil.copyfileobj(handle, out, 1024 * 1024)
        out.flush()
        os.fsync(out.fileno())
