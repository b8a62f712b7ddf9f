"""The metadata store: documents, passages (with their vectors) and index info in SQLite.

SQLite is the source of truth. Each passage row keeps its float32 vector as a
blob, so the FAISS file is a derived artefact that can always be rebuilt
without re-encoding. Every write bumps ``generation`` in the same transaction,
and the FAISS file is named after the generation it matches, so a FAISS file
that lags the database is detected, never silently served.

Opened in WAL mode with a busy timeout: readers see the last committed state
while a writer works.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import sqlite_utils

from .errors import IndexCorruptError, SemsearchError

DB_NAME = "semsearch.db"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --- numbered schema migrations ---------------------------------------------------
def _m001_initial(db: sqlite_utils.Database) -> None:
    db.execute(
        """CREATE TABLE documents (
            id TEXT PRIMARY KEY,
            text TEXT NOT NULL,
            metadata TEXT NOT NULL DEFAULT '{}',
            content_hash TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )"""
    )
    _create_passages(db, "passages")
    db.execute("CREATE TABLE info (key TEXT PRIMARY KEY, value TEXT NOT NULL)")


def _create_passages(db: sqlite_utils.Database, table: str) -> None:
    db.execute(
        f"""CREATE TABLE [{table}] (
            id INTEGER PRIMARY KEY,
            document_id TEXT NOT NULL,
            ord INTEGER NOT NULL,
            char_start INTEGER NOT NULL,
            char_end INTEGER NOT NULL,
            text TEXT NOT NULL,
            vector BLOB NOT NULL
        )"""
    )
    db.execute(f"CREATE INDEX [idx_{table}_document] ON [{table}] (document_id, ord)")


MIGRATIONS = [_m001_initial]
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass
class PassageRow:
    id: int
    document_id: str
    order: int
    start: int
    end: int
    text: str


@dataclass
class NewPassage:
    """A passage about to be written: its span, text and vector."""

    order: int
    start: int
    end: int
    text: str
    vector: np.ndarray


class MetadataStore:
    """Documents, passages and index info of one index directory."""

    def __init__(self, path: Path, conn: sqlite3.Connection):
        self.path = path
        self.conn = conn
        self.db = sqlite_utils.Database(conn)

    # --- opening ------------------------------------------------------------
    @classmethod
    def connect(cls, directory: Path, create: bool = False) -> "MetadataStore":
        path = Path(directory) / DB_NAME
        if not create and not path.is_file():
            raise SemsearchError(f"{path}: no such index database")
        if not create and path.stat().st_size == 0:
            raise IndexCorruptError(f"{path}: the index database is empty (0 bytes); rebuild the index with "
                                    "`semsearch index build --force`")
        try:
            new = create and (not path.exists() or path.stat().st_size == 0)
            conn = sqlite3.connect(str(path), timeout=30.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 30000")
            if new:  # a passage row (1.5 KB vector + text) fits 4 KiB pages badly: a third was slack
                conn.execute("PRAGMA page_size = 16384")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            conn.execute("PRAGMA synchronous = FULL")
            store = cls(path, conn)
            version = store.schema_version()
        except sqlite3.DatabaseError as exc:
            raise IndexCorruptError(
                f"{path}: not a readable semsearch database ({exc}); rebuild the index with "
                "`semsearch index build --force`"
            ) from exc
        if mode.lower() != "wal":  # pragma: no cover - only on file systems without WAL support
            raise SemsearchError(f"{path}: cannot switch the database to WAL mode")
        if version > SCHEMA_VERSION:
            raise SemsearchError(
                f"{path}: index schema version {version} is newer than this semsearch supports "
                f"({SCHEMA_VERSION}); upgrade semsearch"
            )
        if version < SCHEMA_VERSION:
            store.migrate()
        return store

    def schema_version(self) -> int:
        if "migrations" not in self.db.table_names():
            if self.db.table_names():
                raise IndexCorruptError(
                    f"{self.path}: this SQLite file is not a semsearch index (no migrations table)"
                )
            return 0
        row = self.conn.execute("SELECT max(version) FROM migrations").fetchone()
        return int(row[0] or 0)

    def migrate(self) -> None:
        """Apply the numbered migrations that this database has not seen, each in a transaction."""
        with self.transaction():
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS migrations (version INTEGER PRIMARY KEY, name TEXT, applied_at TEXT)"
            )
            done = self.schema_version()
            for number, migration in enumerate(MIGRATIONS, start=1):
                if number > done:
                    migration(self.db)
                    self.conn.execute(
                        "INSERT INTO migrations VALUES (?, ?, ?)", (number, migration.__name__, _now())
                    )

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self, immediate: bool = True):
        """One SQLite transaction (BEGIN IMMEDIATE for writes); rolled back on any error.

        Nested use joins the outer transaction (a read inside a read snapshot).
        """
        if self.conn.in_transaction:
            yield
            return
        self.conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
        try:
            yield
        except BaseException:
            if self.conn.in_transaction:  # SQLite may already have rolled back (e.g. disk full)
                self.conn.execute("ROLLBACK")
            raise
        else:
            self.conn.execute("COMMIT")

    # --- info ------------------------------------------------------------------
    def get_info(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self.conn.execute("SELECT key, value FROM info")}

    def set_info(self, values: dict[str, Any]) -> None:
        self.conn.executemany(
            "INSERT INTO info (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [(k, json.dumps(v)) for k, v in values.items()],
        )

    def generation(self) -> int:
        row = self.conn.execute("SELECT value FROM info WHERE key = 'generation'").fetchone()
        return int(json.loads(row[0])) if row else 0

    def bump_generation(self) -> int:
        gen = self.generation() + 1
        self.set_info({"generation": gen, "updated_at": _now()})
        return gen

    def _take_passage_ids(self, n: int) -> int:
        """Reserve ``n`` passage ids; ids are never reused, even after deletes."""
        row = self.conn.execute("SELECT value FROM info WHERE key = 'next_passage_id'").fetchone()
        first = int(json.loads(row[0])) if row else 1
        self.set_info({"next_passage_id": first + n})
        return first

    # --- documents -------------------------------------------------------------
    def existing(self, ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        """``id -> (content_hash, metadata JSON)`` for those of ``ids`` that are stored."""
        out: dict[str, tuple[str, str]] = {}
        for chunk in _chunked(list(ids), 500):
            marks = ",".join("?" * len(chunk))
            for row in self.conn.execute(
                f"SELECT id, content_hash, metadata FROM documents WHERE id IN ({marks})", chunk
            ):
                out[row[0]] = (row[1], row[2])
        return out

    def update_metadata(self, items: Iterable[tuple[str, str]]) -> None:
        now = _now()
        self.conn.executemany(
            "UPDATE documents SET metadata = ?, updated_at = ? WHERE id = ?",
            [(meta, now, doc_id) for doc_id, meta in items],
        )

    def passage_ids_of(self, doc_ids: Sequence[str], table: str = "passages") -> list[int]:
        out: list[int] = []
        for chunk in _chunked(list(doc_ids), 500):
            marks = ",".join("?" * len(chunk))
            out.extend(
                r[0]
                for r in self.conn.execute(f"SELECT id FROM [{table}] WHERE document_id IN ({marks})", chunk)
            )
        return out

    def write_document(
        self, doc_id: str, text: str, metadata_json: str, content_hash: str,
        passages: Sequence[NewPassage], table: str = "passages",
    ) -> list[int]:
        """Upsert one document and replace its passages; returns the new passage ids."""
        now = _now()
        self.conn.execute(
            """INSERT INTO documents (id, text, metadata, content_hash, created_at, updated_at)
               VALUES (?, ?, ?, ?, ?, ?)
               ON CONFLICT(id) DO UPDATE SET text = excluded.text, metadata = excluded.metadata,
                   content_hash = excluded.content_hash, updated_at = excluded.updated_at""",
            (doc_id, text, metadata_json, content_hash, now, now),
        )
        return self.write_passages(doc_id, passages, table)

    def write_passages(self, doc_id: str, passages: Sequence[NewPassage], table: str = "passages") -> list[int]:
        self.conn.execute(f"DELETE FROM [{table}] WHERE document_id = ?", (doc_id,))
        first = self._take_passage_ids(len(passages))
        ids = list(range(first, first + len(passages)))
        self.conn.executemany(
            f"INSERT INTO [{table}] (id, document_id, ord, char_start, char_end, text, vector) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (pid, doc_id, p.order, p.start, p.end, p.text, np.asarray(p.vector, dtype=np.float32).tobytes())
                for pid, p in zip(ids, passages)
            ],
        )
        return ids

    def delete_documents(self, doc_ids: Sequence[str]) -> tuple[list[str], list[int]]:
        """Delete documents and their passages; returns (deleted ids, removed passage ids)."""
        present = list(self.existing(doc_ids))
        removed = self.passage_ids_of(present)
        for chunk in _chunked(present, 500):
            marks = ",".join("?" * len(chunk))
            self.conn.execute(f"DELETE FROM passages WHERE document_id IN ({marks})", chunk)
            self.conn.execute(f"DELETE FROM documents WHERE id IN ({marks})", chunk)
        return present, removed

    def iter_documents(self, batch: int = 256) -> Iterator[list[tuple[str, str]]]:
        """All ``(id, text)`` in id order, in batches (streams; never loads the whole table)."""
        last = None
        while True:
            if last is None:
                rows = self.conn.execute("SELECT id, text FROM documents ORDER BY id LIMIT ?", (batch,)).fetchall()
            else:
                rows = self.conn.execute(
                    "SELECT id, text FROM documents WHERE id > ? ORDER BY id LIMIT ?", (last, batch)
                ).fetchall()
            if not rows:
                return
            yield rows
            last = rows[-1][0]

    # --- passages and vectors -------------------------------------------------------
    def iter_vectors(self, dimension: int, batch: int = 20_000, table: str = "passages") -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """All ``(ids, vectors)`` in id order, in batches."""
        last = 0
        while True:
            rows = self.conn.execute(
                f"SELECT id, vector FROM [{table}] WHERE id > ? ORDER BY id LIMIT ?", (last, batch)
            ).fetchall()
            if not rows:
                return
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dimension)
            yield ids, vecs
            last = int(ids[-1])

    def passages(self, ids: Sequence[int]) -> dict[int, PassageRow]:
        out: dict[int, PassageRow] = {}
        for chunk in _chunked([int(i) for i in ids], 500):
            marks = ",".join("?" * len(chunk))
            for r in self.conn.execute(
                f"SELECT id, document_id, ord, char_start, char_end, text FROM passages WHERE id IN ({marks})",
                chunk,
            ):
                out[r[0]] = PassageRow(*r)
        return out

    def vectors_of(self, ids: Sequence[int], dimension: int) -> dict[int, np.ndarray]:
        """The stored float32 vectors of some passages."""
        out: dict[int, np.ndarray] = {}
        for chunk in _chunked([int(i) for i in ids], 500):
            marks = ",".join("?" * len(chunk))
            for pid, blob in self.conn.execute(f"SELECT id, vector FROM passages WHERE id IN ({marks})", chunk):
                out[pid] = np.frombuffer(blob, dtype=np.float32, count=dimension)
        return out

    def documents(self, ids: Sequence[str]) -> dict[str, tuple[str, dict]]:
        """``id -> (text, metadata)``."""
        out: dict[str, tuple[str, dict]] = {}
        for chunk in _chunked(list(ids), 500):
            marks = ",".join("?" * len(chunk))
            for r in self.conn.execute(f"SELECT id, text, metadata FROM documents WHERE id IN ({marks})", chunk):
                out[r[0]] = (r[1], json.loads(r[2]))
        return out

    def filtered_passage_ids(self, where: dict[str, Any]) -> np.ndarray:
        """Passage ids of the documents whose metadata equals every ``key: value`` in ``where``.

        Keys and values are bound parameters (no SQL is built from user text).
        A string value also matches a number or boolean with the same text, so
        ``--where year=2020`` finds ``{"year": 2020}``.
        """
        clauses, params = [], []
        for key, value in where.items():
            # json_each compares keys as plain strings: any key works, quotes included.
            test, args = _value_test(value)
            clauses.append(f"EXISTS (SELECT 1 FROM json_each(d.metadata) je WHERE je.key = ? AND {test})")
            params += [str(key), *args]
        sql = "SELECT p.id FROM passages p JOIN documents d ON d.id = p.document_id"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        ids = [r[0] for r in self.conn.execute(sql, params)]
        return np.asarray(ids, dtype=np.int64)

    def counts(self) -> tuple[int, int]:
        docs = self.conn.execute("SELECT count(*) FROM documents").fetchone()[0]
        passages = self.conn.execute("SELECT count(*) FROM passages").fetchone()[0]
        return int(docs), int(passages)

    # --- rebuild support -----------------------------------------------------------------
    def start_next_passages(self) -> None:
        """A fresh, empty ``passages_next`` table for a rebuild (a leftover one is dropped)."""
        with self.transaction():
            self.db.execute("DROP TABLE IF EXISTS passages_next")
            _create_passages(self.db, "passages_next")

    def swap_in_next_passages(self) -> None:
        """Replace ``passages`` by ``passages_next``; call inside a transaction."""
        self.db.execute("DROP TABLE passages")
        self.db.execute("ALTER TABLE passages_next RENAME TO passages")
        self.db.execute("DROP INDEX IF EXISTS idx_passages_next_document")
        self.db.execute("CREATE INDEX IF NOT EXISTS idx_passages_document ON passages (document_id, ord)")

    def drop_next_passages(self) -> None:
        with self.transaction():
            self.db.execute("DROP TABLE IF EXISTS passages_next")


def _value_test(value: Any) -> tuple[str, list]:
    """SQL over ``je.type``/``je.value`` (a json_each row) that is true when it equals ``value``."""
    if value is None:
        return "je.type = 'null'", []
    if isinstance(value, bool):
        return "je.type = ?", ["true" if value else "false"]
    if isinstance(value, (int, float)):
        return "je.type IN ('integer', 'real') AND je.value = ?", [value]
    if isinstance(value, str):
        return ("((je.type = 'text' AND je.value = ?) OR "
                "(je.type IN ('integer', 'real') AND CAST(je.value AS TEXT) = ?) OR "
                "(je.type IN ('true', 'false') AND je.type = lower(?)))"), [value, value, value]
    return "je.type IN ('array', 'object') AND je.value = json(?)", [json.dumps(value, ensure_ascii=False)]


def _chunked(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
