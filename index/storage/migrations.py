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


# The recorded name of each migration is its function's name: ``_m001_initial`` for the
# first, as databases written before this module existed record it.
MIGRATIONS = [(m001_initial, "_m001_initial")]
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
