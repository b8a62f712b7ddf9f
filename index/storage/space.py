"""Disk space: deleted rows give their pages back, the WAL stays bounded, ``compact`` on demand.

SQLite keeps the pages of deleted rows in its file (on its free list) for later writes, and a
large write leaves a write-ahead log as large as what it changed. So:

- a new index database is made with ``auto_vacuum = INCREMENTAL``, and after a write that
  left many free pages (``FREE_SHARE`` of the file and at least ``FREE_MIN_BYTES``) the writer
  runs ``incremental_vacuum``, which moves them to the end of the file and truncates it;
- every connection sets ``journal_size_limit``, and after such a write, or any write that left a
  WAL over ``WAL_BOUND``, the writer checkpoints the WAL and truncates it without waiting for
  readers (``CHECKPOINT_WAIT_MS``: a reader on an older snapshot makes it give up, and
  ``journal_size_limit`` truncates the log at its next reset instead);
- after a delete of a quarter or more of the documents the FTS5 text index (``$contains``) merges
  its segments, dropping the deleted documents' entries (FTS5 keeps them as delete markers);
- ``compact`` (``semsearch index compact``) VACUUMs the database under the write lock (readers
  go on reading their snapshot: VACUUM writes the new pages through the WAL, which is truncated
  once no reader is on an older snapshot, waiting up to ``COMPACT_WAL_WAIT_S``), which also turns
  a database made before auto-vacuum into an incremental one, and writes a fresh vector base.

The vector files give space back through the base rewrite of ``generations`` (a base holding
far more vectors than are live is rewritten at the next commit).
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

JOURNAL_LIMIT = 64 * 1024 * 1024  # bytes of WAL kept after a checkpoint resets it
FREE_SHARE = 0.25  # free pages, as a share of the database, that make a writer give them back
FREE_MIN_BYTES = 256 * 1024
WAL_BOUND = 4 * 1024 * 1024  # a WAL larger than this after a write is checkpointed and truncated
CHECKPOINT_WAIT_MS = 0  # a writer never waits for readers to truncate the WAL (compact retries)
COMPACT_WAL_WAIT_S = 10.0  # how long compact retries truncating the WAL while readers finish their snapshots


@dataclass
class CompactResult:
    """What ``compact`` did: the folder's bytes before and after, and how long it took."""

    path: str
    bytes_before: int
    bytes_after: int
    seconds: float


def configure(conn: sqlite3.Connection, new: bool) -> None:
    """Connection settings: incremental auto-vacuum on a new database (before its first table),
    the WAL's size limit on every connection."""
    if new:
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_LIMIT}")


def wal_bytes(conn: sqlite3.Connection) -> int:
    """The size of the database's write-ahead log file (0 when there is none)."""
    name = conn.execute("PRAGMA database_list").fetchone()[2]
    try:
        return Path(name + "-wal").stat().st_size
    except OSError:
        return 0


def free_bytes(conn: sqlite3.Connection) -> tuple[int, int]:
    """``(free, total)`` bytes of the database file (its free-list pages, all its pages)."""
    page = conn.execute("PRAGMA page_size").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    total = conn.execute("PRAGMA page_count").fetchone()[0]
    return int(free) * int(page), int(total) * int(page)


def reclaim(conn: sqlite3.Connection) -> bool:
    """After a write (outside any transaction, by the lock holder): give free pages back when
    there are many and the database allows it, then checkpoint and truncate the WAL. Returns True
    when pages were given back."""
    if conn.in_transaction:
        return False
    free, total = free_bytes(conn)
    if free < FREE_MIN_BYTES or free < FREE_SHARE * total:
        if wal_bytes(conn) > WAL_BOUND:
            truncate_wal(conn)
        return False
    if conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2:  # INCREMENTAL
        incremental_vacuum(conn)
        truncate_wal(conn)
        return True
    truncate_wal(conn)
    return False


def merge_text_index(conn: sqlite3.Connection, deleted: int, always: bool = False) -> bool:
    """After a delete of ``deleted`` documents (committed, by the lock holder): FTS5 keeps a deleted
    document's trigrams as delete markers until its segments are merged, so a large delete would
    grow the file; when a quarter or more of the documents went, merge every segment
    (``optimize``), which drops them and leaves the pages free for ``reclaim`` (``always``: merge
    whatever was deleted, as ``compact`` does). True when merged."""
    if conn.in_transaction or (deleted <= 0 and not always):
        return False
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'documents_text'").fetchone():
        return False  # an index from before the filter tables
    left = conn.execute("SELECT count(*) FROM documents").fetchone()[0]
    if deleted * 4 < left + deleted and not always:
        return False
    with conn:
        conn.execute("INSERT INTO documents_text (documents_text) VALUES ('optimize')")
    return True


def incremental_vacuum(conn: sqlite3.Connection) -> None:
    """Give every free page back, in one transaction (from Python each run of the pragma frees
    one page, so it is repeated while the free list shrinks)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        while free:
            conn.execute("PRAGMA incremental_vacuum").fetchall()
            left = conn.execute("PRAGMA freelist_count").fetchone()[0]
            if left >= free:
                break
            free = left
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def truncate_wal(conn: sqlite3.Connection) -> bool:
    """Checkpoint the WAL into the database and truncate it, unless readers keep it busy beyond a
    short wait (then ``journal_size_limit`` bounds it at its next reset); True when it was."""
    previous = conn.execute("PRAGMA busy_timeout").fetchone()[0]
    conn.execute(f"PRAGMA busy_timeout = {CHECKPOINT_WAIT_MS}")
    try:
        busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
    except sqlite3.OperationalError:  # busy: a reader holds an older snapshot
        busy = 1
    finally:
        conn.execute(f"PRAGMA busy_timeout = {int(previous)}")
    return not busy


def folder_bytes(path: Path) -> int:
    """Bytes of the regular files in an index folder, its sub-folders included."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def compact(index: Any, wait: bool | float = False) -> CompactResult:
    """VACUUM the index database and rewrite its vector base under the write lock; readers go on."""
    started = time.monotonic()
    before = folder_bytes(index.path)
    previous_wait, index.wait = index.wait, wait
    try:
        with index.session() as writer:
            writer.generations.save()  # one base of the live vectors; older files removed
            conn = writer.store.conn
            merge_text_index(conn, 0, always=True)  # the text index's delete markers, before VACUUM
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # takes effect with the VACUUM
            conn.execute("VACUUM")
            # The VACUUMed pages are in the WAL until readers on older snapshots (each request's
            # short read) move on; retry for a while, else the next checkpoint gives them back.
            until = time.monotonic() + COMPACT_WAL_WAIT_S
            while not truncate_wal(conn) and time.monotonic() < until:
                time.sleep(0.05)
    finally:
        index.wait = previous_wait
    return CompactResult(path=str(index.path), bytes_before=before, bytes_after=folder_bytes(index.path),
                         seconds=time.monotonic() - started)
