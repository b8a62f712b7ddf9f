"""The index folder's life: made aside and renamed into place, swapped atomically, recovered.

An index is a folder holding ``semsearch.db``. A new index is prepared in a
hidden staging folder next to its destination and renamed into place, so a
crash never leaves a half-made index at the destination. Replacing an index
(``build --force``) swaps the two folders in one step where Linux allows it
(``renameat2`` with ``RENAME_EXCHANGE``); elsewhere two renames are used, and
``recover`` puts the old index back if a crash fell between them. Leftover
staging folders are named after the process that made them and removed once
that process is gone.
"""

from __future__ import annotations

import os
import re
import shutil
from contextlib import contextmanager
from glob import escape as glob_escape
from pathlib import Path
from typing import Iterator

from ..errors import IndexExistsError
from .store import DB_NAME

STAGING_KINDS = ("old", "creating", "building")
# A file semsearch puts in every folder it may later remove on its own (a staging folder, an
# index moved aside by a replacement): clean-up removes only folders that carry it, never a
# user's own ``.NAME.old-1234`` backup.
MARKER = ".semsearch-leftover"


def mark(folder: Path) -> None:
    (Path(folder) / MARKER).write_text("made by semsearch: removed once the process that made it is gone\n",
                                       encoding="utf-8")


def make_marked(folder: Path) -> None:
    """Make a staging folder readable by its owner alone (0700, or less under a stricter umask),
    and mark it as semsearch's."""
    Path(folder).mkdir(mode=0o700)
    mark(folder)


def unmark(folder: Path) -> None:
    (Path(folder) / MARKER).unlink(missing_ok=True)


def marked(folder: Path) -> bool:
    return (Path(folder) / MARKER).is_file()


def numbered_entries(folder: Path, pattern: re.Pattern, folders: bool = False) -> dict[int, Path]:
    """``number -> path`` of the entries of ``folder`` whose name ``pattern`` matches (its one group
    is the number: a generation); only folders with ``folders``, else only files."""
    out = {}
    for entry in Path(folder).iterdir():
        m = pattern.match(entry.name)
        if m and entry.is_dir() == folders:
            out[int(m.group(1))] = entry
    return out


def is_index(path: Path) -> bool:
    return (Path(path) / DB_NAME).is_file()


def staging_path(path: Path, kind: str) -> Path:
    """The hidden folder next to ``path`` where this process prepares it (``kind``: creating, building)."""
    return path.parent / f".{path.name}.{kind}-{os.getpid()}"


def check_destination(path: Path, force: bool) -> None:
    """Refuse to make an index where something else is (or an index is, unless ``force``)."""
    if not path.exists():
        return
    if is_index(path):
        if not force:
            raise IndexExistsError(f"an index already exists at {path}; pass --force to replace it")
    elif path.is_dir() and any(path.iterdir()):
        raise IndexExistsError(f"{path} exists and is not an empty folder or a semsearch index")
    elif not path.is_dir():
        raise IndexExistsError(f"{path} exists and is not a folder")


@contextmanager
def staging(path: Path, kind: str) -> Iterator[Path]:
    """The path of a fresh staging folder for ``path``, removed on the way out (after it was moved
    into place, nothing is left to remove). Whoever makes the folder marks it (``make_marked``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = staging_path(path, kind)
    if folder.exists():
        if not marked(folder):
            raise IndexExistsError(f"{folder} is in the way and was not made by semsearch; move it")
        shutil.rmtree(folder, ignore_errors=True)  # this pid's own leftover (a reused pid)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def put_in_place(new: Path, path: Path) -> None:
    """Move the finished index folder ``new`` to ``path``, atomically replacing an index there."""
    if is_index(path):
        replace_index(new, path)
        return
    if path.is_dir():
        path.rmdir()
    os.rename(new, path)
    unmark(path)


def replace_index(new: Path, path: Path) -> None:
    """Put the index folder ``new`` at ``path`` in place of the index there, then delete the old one.

    Linux swaps the two folders in one step, so ``path`` always holds a whole
    index. Elsewhere two renames are used, and :func:`recover` puts the old
    index back if a crash falls between them.
    """
    old = staging_path(path, "old")
    mark(path)  # the index about to be moved aside: clean-up may remove it
    if exchange(new, path):
        unmark(path)
        os.rename(new, old)
    else:
        os.rename(path, old)
        os.rename(new, path)
        unmark(path)
    shutil.rmtree(old, ignore_errors=True)


def exchange(a: Path, b: Path) -> bool:
    """Swap two folders atomically (``renameat2`` ``RENAME_EXCHANGE``); False where unsupported."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def recover(path: Path) -> None:
    """After a crash between the two renames of :func:`replace_index`, put the old index back;
    remove leftovers of interrupted creates and replacements whose process is gone."""
    path = Path(path)
    parent = path.parent
    if not parent.is_dir():
        return
    leftovers = sorted(parent.glob(f".{glob_escape(path.name)}.old-*"), key=lambda p: p.stat().st_mtime)
    if not is_index(path) and leftovers and is_index(leftovers[-1]):
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()
        if not path.exists():
            os.rename(leftovers.pop(), path)
            unmark(path)
    for kind in STAGING_KINDS:
        for leftover in parent.glob(f".{glob_escape(path.name)}.{kind}-*"):
            pid = leftover.name.rsplit("-", 1)[-1]
            if (leftover.is_dir() and not leftover.is_symlink() and marked(leftover)
                    and not (pid.isdigit() and pid_alive(int(pid)))):
                shutil.rmtree(leftover, ignore_errors=True)


def pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

