"""The metadata store: documents, passages (with their vectors) and index info in SQLite.

SQLite is the source of truth. Each passage row keeps its float32 vector as a
blob, so the FAISS file is a derived artefact that can always be rebuilt
without re-encoding. Every write bumps ``generation`` in the same transaction,
and the FAISS file is named after the generation it matches, so a FAISS file
that lags the database is detected, never silently served.

Every SQL statement of the package lives here (the schema itself in
``migrations.py``, metadata filters in ``filters.py``; the operator's reads,
backups and space pragmas in ``listing.py``, ``backup.py`` and ``space.py``),
each behind a named method. Opened in WAL mode with a busy
timeout: readers see the last committed state while a writer works.
"""

from __future__ import annotations

import json
import os
import sqlite3
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from ..errors import IndexCorruptError, SemsearchError
from ..records import Passage
from . import filters, info_values, migrations, space

DB_NAME = "semsearch.db"
NEXT_TABLE = "passages_next"  # filled by a rebuild, swapped in when complete
IN_CHUNK = 500  # values per "IN (?, ...)" query, well below SQLite's variable limit
BLOB_PREFIX = "blob:"  # info keys holding bytes (read by get_blob, never by get_info)


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class MetadataStore:
    """Documents, passages and index info of one index directory."""

    def __init__(self, path: Path, conn: sqlite3.Connection):
        self.path = path
        self.conn = conn
        self._db = None
        self.identity = _identity(path)  # the database file opened (a replaced index has another)

    def replaced(self) -> bool:
        """True when the database at this path is no longer the file this store opened."""
        return _identity(self.path) != self.identity

    @property
    def db(self):
        """The connection as a ``sqlite_utils.Database`` (for schema work; imported on first use,
        so that a process that only reads does not pay for it)."""
        if self._db is None:
            import sqlite_utils

            self._db = sqlite_utils.Database(self.conn)
        return self._db

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
            space.configure(conn, new)  # incremental auto-vacuum on a new file, a bounded WAL
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
        if version > migrations.SCHEMA_VERSION:
            raise SemsearchError(
                f"{path}: index schema version {version} is newer than this semsearch supports "
                f"({migrations.SCHEMA_VERSION}); upgrade semsearch"
            )
        if version < migrations.SCHEMA_VERSION:
            store.migrate()
        return store

    def schema_version(self) -> int:
        version = migrations.version(self.conn)
        if version is None:
            raise IndexCorruptError(f"{self.path}: this SQLite file is not a semsearch index (no migrations table)")
        return version

    def migrate(self) -> None:
        """Apply the numbered migrations that this database has not seen."""
        with self.transaction():
            migrations.apply(self.db, utc_now())

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

    def integrity(self) -> str:
        """SQLite's quick check: ``"ok"`` or what is damaged."""
        return self.conn.execute("PRAGMA quick_check").fetchone()[0]

    def _in_chunks(self, sql: str, values: Sequence) -> list[tuple]:
        """Run ``sql`` (with one ``{marks}`` placeholder for an ``IN`` list) over ``values`` in
        chunks that stay below SQLite's limit on bound variables; returns every row."""
        values, rows = list(values), []
        for i in range(0, len(values), IN_CHUNK):
            chunk = values[i : i + IN_CHUNK]
            rows += self.conn.execute(sql.format(marks=",".join("?" * len(chunk))), chunk).fetchall()
        return rows

    # --- info ------------------------------------------------------------------
    def get_info(self) -> dict[str, Any]:
        """Every recorded setting but the binary ones (``BLOB_PREFIX``: see ``get_blob``)."""
        return info_values.checked(self.conn.execute(
            "SELECT key, value FROM info WHERE substr(key, 1, length(?)) != ?", (BLOB_PREFIX, BLOB_PREFIX)))

    def get_blob(self, key: str) -> bytes | None:
        """A binary setting (e.g. the whitening transform), kept in ``info`` out of ``get_info``'s way."""
        row = self.conn.execute("SELECT value FROM info WHERE key = ?", (BLOB_PREFIX + key,)).fetchone()
        return None if row is None else bytes(row[0])

    def set_blob(self, key: str, data: bytes | None) -> None:
        """Record (None: remove) a binary setting; call inside a transaction."""
        if data is None:
            self.conn.execute("DELETE FROM info WHERE key = ?", (BLOB_PREFIX + key,))
        else:
            self.conn.execute("INSERT INTO info (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                              "value = excluded.value", (BLOB_PREFIX + key, sqlite3.Binary(data)))

    def set_info(self, values: dict[str, Any]) -> None:
        self.conn.executemany(
            "INSERT INTO info (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [(k, json.dumps(v)) for k, v in values.items()],
        )

    def initialise(self, info: dict[str, Any]) -> None:
        """The info of a new index (generation 0, no passage ids used yet, timestamps now)."""
        now = utc_now()
        with self.transaction():
            self.set_info({**info, "generation": 0, "next_passage_id": 1, "created_at": now, "updated_at": now})

    def generation(self) -> int:
        row = self.conn.execute("SELECT value FROM info WHERE key = 'generation'").fetchone()
        return info_values.value("generation", row[0]) if row else 0

    def bump_generation(self) -> int:
        gen = self.generation() + 1
        self.set_info({"generation": gen, "updated_at": utc_now()})
        return gen

    def take_passage_ids(self, n: int) -> int:
        """Reserve ``n`` passage ids and return the first; ids are never reused, even after deletes."""
        row = self.conn.execute("SELECT value FROM info WHERE key = 'next_passage_id'").fetchone()
        first = int(json.loads(row[0])) if row else 1
        self.set_info({"next_passage_id": first + n})
        return first

    # --- documents -------------------------------------------------------------
    def existing(self, ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        """``id -> (content_hash, metadata JSON)`` for those of ``ids`` that are stored."""
        sql = "SELECT id, content_hash, metadata FROM documents WHERE id IN ({marks})"
        return {r[0]: (r[1], r[2]) for r in self._in_chunks(sql, ids)}

    def documents(self, ids: Sequence[str]) -> dict[str, tuple[str, dict]]:
        """``id -> (text, metadata)``."""
        sql = "SELECT id, text, metadata FROM documents WHERE id IN ({marks})"
        return {r[0]: (r[1], json.loads(r[2])) for r in self._in_chunks(sql, ids)}

    def update_metadata(self, items: Iterable[tuple[str, str]]) -> None:
        now = utc_now()
        self.conn.executemany(
            "UPDATE documents SET metadata = ?, updated_at = ? WHERE id = ?",
            [(meta, now, doc_id) for doc_id, meta in items],
        )

    def forget_content_hashes(self, doc_ids: Sequence[str]) -> None:
        """Make documents look changed, so that the next add encodes them again."""
        self.conn.executemany("UPDATE documents SET content_hash = '' WHERE id = ?", [(d,) for d in doc_ids])

    def write_document(
        self, doc_id: str, text: str, metadata_json: str, content_hash: str,
        passages: Sequence[Passage], vectors: np.ndarray,
    ) -> list[int]:
        """Upsert one document and replace its passages; returns the new passage ids."""
        now = utc_now()
        self.conn.execute(
            """INSERT INTO documents (id, text, metadata, content_hash, created_at, updated_at)
               VALUES (?, ?, ?, ?, ?, ?)
               ON CONFLICT(id) DO UPDATE SET text = excluded.text, metadata = excluded.metadata,
                   content_hash = excluded.content_hash, updated_at = excluded.updated_at""",
            (doc_id, text, metadata_json, content_hash, now, now),
        )
        return self._write_passages("passages", doc_id, passages, vectors)

    def write_next_passages(self, doc_id: str, passages: Sequence[Passage], vectors: np.ndarray) -> list[int]:
        """A document's passages re-encoded by a rebuild, into the side table."""
        return self._write_passages(NEXT_TABLE, doc_id, passages, vectors)

    def _write_passages(self, table: str, doc_id: str, passages: Sequence[Passage], vectors: np.ndarray) -> list[int]:
        self.conn.execute(f"DELETE FROM [{table}] WHERE document_id = ?", (doc_id,))
        first = self.take_passage_ids(len(passages))
        ids = list(range(first, first + len(passages)))
        self.conn.executemany(
            f"INSERT INTO [{table}] (id, document_id, ord, char_start, char_end, text, vector) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (pid, doc_id, p.order, p.start, p.end, p.text, np.asarray(v, dtype=np.float32).tobytes())
                for pid, p, v in zip(ids, passages, vectors)
            ],
        )
        return ids

    def insert_vector_documents(self, first_id: int, vectors: np.ndarray, prefix: str = "syn") -> None:
        """One-passage documents ``<prefix><id>`` holding given vectors, without text processing
        (benchmarks fill large indexes this way); reserves the ids."""
        ids = range(first_id, first_id + len(vectors))
        self.conn.executemany(
            "INSERT INTO documents (id, text, metadata, content_hash, created_at, updated_at) "
            "VALUES (?, ?, '{}', '', '', '')",
            [(f"{prefix}{i}", f"synthetic document {i}") for i in ids])
        self.conn.executemany(
            "INSERT INTO passages (id, document_id, ord, char_start, char_end, text, vector) "
            "VALUES (?, ?, 0, 0, 0, '', ?)",
            [(i, f"{prefix}{i}", np.asarray(v, dtype=np.float32).tobytes()) for i, v in zip(ids, vectors)])
        self.set_info({"next_passage_id": first_id + len(vectors)})

    def delete_documents(self, doc_ids: Sequence[str]) -> tuple[list[str], list[int]]:
        """Delete documents and their passages; returns (deleted ids, removed passage ids)."""
        present = list(self.existing(doc_ids))
        removed = self.passage_ids_of(present)
        self._in_chunks("DELETE FROM passages WHERE document_id IN ({marks})", present)
        self._in_chunks("DELETE FROM documents WHERE id IN ({marks})", present)
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

    def documents_without_passages(self) -> list[str]:
        """Documents that no search can find (their passages are missing)."""
        return [r[0] for r in self.conn.execute(
            "SELECT id FROM documents WHERE id NOT IN (SELECT document_id FROM passages)")]

    def counts(self) -> tuple[int, int]:
        docs = self.conn.execute("SELECT count(*) FROM documents").fetchone()[0]
        passages = self.conn.execute("SELECT count(*) FROM passages").fetchone()[0]
        return int(docs), int(passages)

    # --- passages and vectors -------------------------------------------------------
    def passage_ids_of(self, doc_ids: Sequence[str]) -> list[int]:
        return [r[0] for r in self._in_chunks("SELECT id FROM passages WHERE document_id IN ({marks})", doc_ids)]

    def passages(self, ids: Sequence[int]) -> dict[int, tuple[str, Passage]]:
        """``passage id -> (document id, passage)`` for those of ``ids`` that are stored."""
        sql = "SELECT id, document_id, ord, char_start, char_end, text FROM passages WHERE id IN ({marks})"
        return {r[0]: (r[1], Passage(r[2], r[3], r[4], r[5])) for r in self._in_chunks(sql, [int(i) for i in ids])}

    def vectors_of(self, ids: Sequence[int], dimension: int) -> dict[int, np.ndarray]:
        """The stored float32 vectors of some passages."""
        sql = "SELECT id, vector FROM passages WHERE id IN ({marks})"
        return {pid: np.frombuffer(blob, dtype=np.float32, count=dimension)
                for pid, blob in self._in_chunks(sql, [int(i) for i in ids])}

    def iter_vectors(self, dimension: int, batch: int = 20_000, next_table: bool = False,
                     ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """All ``(ids, vectors)`` in id order, in batches (of the rebuild's side table with ``next_table``)."""
        table = NEXT_TABLE if next_table else "passages"
        last = 0
        while True:
            rows = self.conn.execute(
                f"SELECT id, vector FROM [{table}] WHERE id > ? ORDER BY id LIMIT ?", (last, batch)
            ).fetchall()
            if not rows:
                return
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            blob = b"".join(r[1] for r in rows)
            if len(blob) != 4 * dimension * len(rows):  # the info table's dimension is damaged
                raise IndexCorruptError(f"the stored vectors are not {dimension}-d, the dimension {self.path} "
                                        "records; restore a backup of semsearch.db or rebuild the index")
            vecs = np.frombuffer(blob, dtype=np.float32).reshape(len(rows), dimension)
            yield ids, vecs
            last = int(ids[-1])

    def iter_passage_texts(self, batch: int = 20_000) -> Iterator[list[tuple[int, str]]]:
        """All ``(passage id, text)`` in id order, in batches (the BM25 index is built from them)."""
        last = 0
        while True:
            rows = self.conn.execute(
                "SELECT id, text FROM passages WHERE id > ? ORDER BY id LIMIT ?", (last, batch)).fetchall()
            if not rows:
                return
            yield rows
            last = int(rows[-1][0])

    def passage_ids(self) -> np.ndarray:
        """Every passage id, ascending."""
        return np.fromiter((r[0] for r in self.conn.execute("SELECT id FROM passages ORDER BY id")), dtype=np.int64)

    def passage_id_summary(self) -> tuple[int, int]:
        """``(count, sum)`` of the passage ids: a cheap fingerprint of the set a FAISS file must hold."""
        count, total = self.conn.execute("SELECT count(*), coalesce(sum(id), 0) FROM passages").fetchone()
        return int(count), int(total)

    def orphan_passage_ids(self) -> list[int]:
        """Passages whose document is gone."""
        return [r[0] for r in self.conn.execute(
            "SELECT id FROM passages WHERE document_id NOT IN (SELECT id FROM documents)")]

    def delete_passages(self, ids: Sequence[int]) -> None:
        self.conn.executemany("DELETE FROM passages WHERE id = ?", [(int(i),) for i in ids])

    def filtered_passage_ids(self, where: dict[str, Any]) -> np.ndarray:
        """Passage ids of the documents whose metadata equals every ``key: value`` in ``where``
        (the SQL and its limits: ``filters``)."""
        return filters.passage_ids(self.conn, where)

    # --- rebuild support -----------------------------------------------------------------
    def has_next_passages(self) -> bool:
        """True when an interrupted rebuild left its side table behind."""
        return self.conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                                 (NEXT_TABLE,)).fetchone() is not None

    def start_next_passages(self) -> None:
        """A fresh, empty side table for a rebuild (a leftover one is dropped)."""
        with self.transaction():
            self.db.execute(f"DROP TABLE IF EXISTS {NEXT_TABLE}")
            migrations.create_passages_table(self.db, NEXT_TABLE)

    def swap_in_next_passages(self) -> None:
        """Replace ``passages`` by the side table; call inside a transaction."""
        self.db.execute("DROP TABLE passages")
        self.db.execute(f"ALTER TABLE {NEXT_TABLE} RENAME TO passages")
        self.db.execute(f"DROP INDEX IF EXISTS idx_{NEXT_TABLE}_document")
        self.db.execute("CREATE INDEX IF NOT EXISTS idx_passages_document ON passages (document_id, ord)")

    def drop_next_passages(self) -> None:
        with self.transaction():
            self.db.execute(f"DROP TABLE IF EXISTS {NEXT_TABLE}")


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino
