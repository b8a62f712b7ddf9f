"""The SQLite schema of an index, as numbered migrations.

Migration N is applied once, in its own transaction, and recorded in the
``migrations`` table with its name and time; ``SCHEMA_VERSION`` is the number
of the last one. A database newer than this code is refused by the store.
To change the schema, append a function to ``MIGRATIONS``; never edit one that
has shipped.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import sqlite_utils

MIGRATIONS_TABLE = "migrations"


def create_passages_table(db: "sqlite_utils.Database", table: str) -> None:
    """A passages table (``passages``, or ``passages_next`` while a rebuild fills it)."""
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


def m001_initial(db: "sqlite_utils.Database") -> None:
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
    create_passages_table(db, "passages")
    db.execute("CREATE TABLE info (key TEXT PRIMARY KEY, value TEXT NOT NULL)")


# metadata_values: one row per top-level metadata key of each document, kept by triggers in the
# same transaction as the documents; documents_text: the FTS5 trigram index of document texts.
_VALUE_ROWS = """SELECT {doc}, je.key, je.type,
           CASE je.type WHEN 'null' THEN NULL WHEN 'true' THEN 'true' WHEN 'false' THEN 'false'
                ELSE CAST(je.value AS TEXT) END,
           CASE WHEN je.type IN ('integer', 'real') THEN je.value END
    FROM {source} json_each({metadata}) je"""


FILL_METADATA_VALUES = ("INSERT INTO metadata_values (document_id, key, type, value_text, value_num) "
                        + _VALUE_ROWS.format(doc="d.id", source="documents d,", metadata="d.metadata"))
FILTER_EPOCH = "filter_epoch"  # info key: bumped by every change a filter can see (cached filters key on it)
_BUMP = f"UPDATE info SET value = CAST(value AS INTEGER) + 1 WHERE key = '{FILTER_EPOCH}';"


def m002_metadata_values(db: "sqlite_utils.Database") -> None:
    """Filters through indexes: ``metadata_values`` (document, key, type, text, number), indexed on
    (key, value), and ``documents_text`` (FTS5 trigram, for ``$contains``), both filled from the
    stored documents and kept by triggers."""
    db.execute(
        """CREATE TABLE metadata_values (
            document_id TEXT NOT NULL,
            key TEXT NOT NULL,
            type TEXT NOT NULL,
            value_text TEXT,
            value_num
        )"""
    )
    db.execute("CREATE INDEX idx_metadata_values_text ON metadata_values (key, value_text, type, document_id)")
    db.execute("CREATE INDEX idx_metadata_values_num ON metadata_values (key, value_num, document_id) "
               "WHERE value_num IS NOT NULL")
    db.execute("CREATE INDEX idx_metadata_values_document ON metadata_values (document_id)")
    db.execute(f"INSERT OR IGNORE INTO info (key, value) VALUES ('{FILTER_EPOCH}', '0')")
    db.execute("CREATE VIRTUAL TABLE documents_text USING fts5(text, content='documents', "
               "tokenize='trigram case_sensitive 1')")
    new_rows = _VALUE_ROWS.format(doc="new.id", source="", metadata="new.metadata")
    db.execute(f"""CREATE TRIGGER documents_filter_insert AFTER INSERT ON documents BEGIN
        INSERT INTO metadata_values (document_id, key, type, value_text, value_num) {new_rows};
        INSERT INTO documents_text (rowid, text) VALUES (new.rowid, new.text);
        {_BUMP}
    END""")
    db.execute(f"""CREATE TRIGGER documents_filter_delete AFTER DELETE ON documents BEGIN
        DELETE FROM metadata_values WHERE document_id = old.id;
        INSERT INTO documents_text (documents_text, rowid, text) VALUES ('delete', old.rowid, old.text);
        {_BUMP}
    END""")
    db.execute(f"""CREATE TRIGGER documents_filter_metadata AFTER UPDATE OF id, metadata ON documents
        WHEN old.metadata IS NOT new.metadata OR old.id IS NOT new.id BEGIN
        DELETE FROM metadata_values WHERE document_id = old.id;
        INSERT INTO metadata_values (document_id, key, type, value_text, value_num) {new_rows};
        {_BUMP}
    END""")
    db.execute(f"""CREATE TRIGGER documents_filter_text AFTER UPDATE OF text ON documents
        WHEN old.text IS NOT new.text BEGIN
        INSERT INTO documents_text (documents_text, rowid, text) VALUES ('delete', old.rowid, old.text);
        INSERT INTO documents_text (rowid, text) VALUES (new.rowid, new.text);
        {_BUMP}
    END""")
    db.execute(FILL_METADATA_VALUES)
    db.execute("INSERT INTO documents_text (documents_text) VALUES ('rebuild')")


# The recorded name of each migration is its function's name: ``_m001_initial`` for the
# first, as databases written before this module existed record it.
MIGRATIONS = [(m001_initial, "_m001_initial"), (m002_metadata_values, "m002_metadata_values")]
SCHEMA_VERSION = len(MIGRATIONS)


def version(conn: sqlite3.Connection) -> int | None:
    """The applied schema version; 0 for an empty database; None when the file holds
    tables but no migrations record (not a semsearch index). Plain sqlite3, so that
    opening an index to read it does not import sqlite-utils."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if MIGRATIONS_TABLE not in tables:
        return None if tables else 0
    row = conn.execute(f"SELECT max(version) FROM {MIGRATIONS_TABLE}").fetchone()
    return int(row[0] or 0)


def apply(db: "sqlite_utils.Database", applied_at: str) -> None:
    """Apply the migrations this database has not seen; call inside a transaction."""
    db.execute(f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (version INTEGER PRIMARY KEY, name TEXT, applied_at TEXT)")
    done = version(db.conn) or 0
    for number, (migration, name) in enumerate(MIGRATIONS, start=1):
        if number > done:
            migration(db)
            db.execute(f"INSERT INTO {MIGRATIONS_TABLE} VALUES (?, ?, ?)", (number, name, applied_at))
