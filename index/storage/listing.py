"""Reading documents back: by id, or all of them in id order, paged, filtered, streamed.

``get`` and ``documents`` open a read connection of their own on the index database and read
inside one read transaction, so a listing or an export sees one committed state from its first
row to its last while writers go on committing, and a caller's own connection (and its
transactions) is never disturbed. ``documents`` streams in batches by key (``id > last``), so
exporting a million documents holds one batch in memory; a metadata filter goes through
``filters.passage_ids`` (the same filter as a search), whose matching ids are held once.
The SQL that reads documents for these lives here.
"""

from __future__ import annotations

import bisect
import json
import sqlite3
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from ..errors import SemsearchError
from ..model.text import normalize_text
from . import filters
from .store import DB_NAME, IN_CHUNK

BATCH = 500  # documents read per query while streaming
COLUMNS = "id, text, metadata, created_at, updated_at"


@dataclass
class StoredDocument:
    """One stored document; ``passages`` (with ``vectors=True``): ``{"start", "end", "vector"}`` each."""

    id: str
    text: str
    metadata: dict
    created_at: str
    updated_at: str
    passages: list[dict] | None = None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.passages is None:
            out.pop("passages")
        return out

    def as_input(self) -> dict[str, Any]:
        """The JSONL record ``index build`` reads back (id, text, metadata; passages when read)."""
        record = {"id": self.id, "text": self.text, "metadata": self.metadata}
        if self.passages is not None:
            record["passages"] = self.passages
        return record


@contextmanager
def reading(folder: Path) -> Iterator[sqlite3.Connection]:
    """A connection of its own in one read transaction of the index at ``folder``."""
    path = Path(folder) / DB_NAME
    if not path.is_file():
        raise SemsearchError(f"{path}: no such index database")
    with closing(sqlite3.connect(str(path), timeout=30.0, isolation_level=None, check_same_thread=False)) as conn:
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("ROLLBACK")


def check_paging(limit: int | None, offset: int, after: str | None) -> None:
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise SemsearchError(f"limit must be a whole number of at least 0 (got {limit!r})")
    if not isinstance(offset, int) or offset < 0:
        raise SemsearchError(f"offset must be a whole number of at least 0 (got {offset!r})")
    if offset and after is not None:
        raise SemsearchError("give an offset or an id to start after, not both")


def get(folder: Path, ids: Iterable[str], vectors: bool = False) -> list[StoredDocument]:
    """The stored documents among ``ids``, in the order asked (ids not stored are left out)."""
    wanted = list(dict.fromkeys(normalize_text(str(i)) for i in ids))
    with reading(folder) as conn:
        found = {d.id: d for d in _rows(conn, wanted, vectors)}
    return [found[i] for i in wanted if i in found]


def documents(folder: Path, where: Mapping[str, Any] | None = None, limit: int | None = None,
              offset: int = 0, after: str | None = None, vectors: bool = False,
              batch: int = BATCH) -> Iterator[StoredDocument]:
    """Stored documents in id order: those whose metadata matches ``where`` (the search filter),
    skipping ``offset`` of them or starting after the id ``after``, at most ``limit``. A generator
    over one read snapshot; close it (or run it out) to end the read. Bad paging is refused at
    once, before any read."""
    check_paging(limit, offset, after)
    return _stream(Path(folder), where, limit, offset, after, vectors, batch)


def _stream(folder: Path, where: Mapping[str, Any] | None, limit: int | None, offset: int,
            after: str | None, vectors: bool, batch: int) -> Iterator[StoredDocument]:
    if limit == 0:
        return
    with reading(folder) as conn:
        matching = _matching_ids(conn, where, after) if where else None
        sent, skip, last = 0, offset, after
        while limit is None or sent < limit:
            if matching is not None:
                start = bisect.bisect_right(matching, last) if last is not None else 0
                page = matching[start + skip:start + skip + batch]
                docs = _rows(conn, page, vectors)
            else:
                docs = _page(conn, last, skip, batch, vectors)
            skip = 0
            if not docs:
                return
            for doc in docs:
                if limit is not None and sent >= limit:
                    return
                yield doc
                sent += 1
            last = docs[-1].id


def _matching_ids(conn: sqlite3.Connection, where: Mapping[str, Any], after: str | None) -> list[str]:
    """The ids of the documents ``where`` matches, sorted (through the search filter, which names
    passages: a document without passages never matches a filter)."""
    passage_ids = filters.passage_ids(conn, dict(where))
    ids: set[str] = set()
    values = [int(i) for i in passage_ids]
    for i in range(0, len(values), IN_CHUNK):
        chunk = values[i:i + IN_CHUNK]
        ids.update(r[0] for r in conn.execute(
            f"SELECT DISTINCT document_id FROM passages WHERE id IN ({','.join('?' * len(chunk))})", chunk))
    return sorted(i for i in ids if after is None or i > after)


def _page(conn: sqlite3.Connection, after: str | None, offset: int, n: int, vectors: bool) -> list[StoredDocument]:
    if after is None:
        rows = conn.execute(f"SELECT {COLUMNS} FROM documents ORDER BY id LIMIT ? OFFSET ?", (n, offset))
    else:
        rows = conn.execute(f"SELECT {COLUMNS} FROM documents WHERE id > ? ORDER BY id LIMIT ? OFFSET ?",
                            (after, n, offset))
    docs = [_document(r) for r in rows.fetchall()]
    if vectors:
        _attach_passages(conn, docs)
    return docs


def _rows(conn: sqlite3.Connection, ids: list[str], vectors: bool) -> list[StoredDocument]:
    """The documents of ``ids`` that are stored, in id order."""
    docs = []
    for i in range(0, len(ids), IN_CHUNK):
        chunk = ids[i:i + IN_CHUNK]
        docs += [_document(r) for r in conn.execute(
            f"SELECT {COLUMNS} FROM documents WHERE id IN ({','.join('?' * len(chunk))})", chunk)]
    docs.sort(key=lambda d: d.id)
    if vectors:
        _attach_passages(conn, docs)
    return docs


def _document(row: tuple) -> StoredDocument:
    return StoredDocument(id=row[0], text=row[1], metadata=json.loads(row[2]), created_at=row[3], updated_at=row[4])


def _attach_passages(conn: sqlite3.Connection, docs: list[StoredDocument]) -> None:
    by_id = {d.id: d for d in docs}
    for d in docs:
        d.passages = []
    ids = list(by_id)
    for i in range(0, len(ids), IN_CHUNK):
        chunk = ids[i:i + IN_CHUNK]
        for doc_id, start, end, blob in conn.execute(
                "SELECT document_id, char_start, char_end, vector FROM passages WHERE document_id IN "
                f"({','.join('?' * len(chunk))}) ORDER BY document_id, ord", chunk):
            vector = np.frombuffer(blob, dtype=np.float32)
            by_id[doc_id].passages.append({"start": start, "end": end, "vector": [float(x) for x in vector]})
