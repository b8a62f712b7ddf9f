"""One writer at a time: an advisory ``flock`` on ``<index>/write.lock``.

The kernel releases the lock when the holding process dies, so a lock left by
a killed process never blocks anyone; the file only records the last holder's
pid for the error message.

A writer that waited while ``index build --force`` replaced the whole folder
gets the lock of a folder that is no longer the index: ``acquire`` sees that
the lock file at the path is another file now and raises
``IndexReplacedError``, so nothing is written (and acknowledged) into a folder
about to be deleted.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from ..errors import IndexLockedError, IndexReplacedError

LOCK_NAME = "write.lock"


class WriteLock:
    def __init__(self, directory: Path, wait: bool | float = False):
        self.path = Path(directory) / LOCK_NAME
        self.wait = wait
        self._fd: int | None = None

    def acquire(self) -> "WriteLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = None if self.wait is True else time.monotonic() + float(self.wait or 0)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    holder = _read_pid(fd)
                    os.close(fd)
                    who = f"process {holder}" if holder else "another process"
                    raise IndexLockedError(
                        f"index {self.path.parent} is being written by {who}; "
                        "try again when it finishes, or pass --wait"
                    ) from None
                time.sleep(0.05)
        if not _same_file(fd, self.path):
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            raise IndexReplacedError(
                f"index {self.path.parent} was replaced (index build --force) while this write waited; "
                "nothing was written: open the index again and retry")
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "WriteLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or 0) or None
    except (OSError, ValueError):
        return None
