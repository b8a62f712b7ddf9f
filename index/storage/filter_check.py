"""Verify and rebuild the filter indexes of migration m002 (``metadata_values``, ``documents_text``).

Both are derived from ``documents`` and kept by triggers in the same
transaction, so they can only disagree with it through damage or a hand edit;
``index check`` reports that (one comparison of row counts, reading only) and
``index repair`` refills both from the documents.
"""

from __future__ import annotations

import sqlite3

from . import migrations


def problems(conn: sqlite3.Connection) -> list[str]:
    """What is wrong with the filter indexes (empty: they agree with the documents)."""
    stored = conn.execute("SELECT count(*) FROM metadata_values").fetchone()[0]
    expected = conn.execute("SELECT count(*) FROM documents d, json_each(d.metadata)").fetchone()[0]
    if stored != expected:
        return [f"the metadata filter index holds {stored} value(s) where the documents have {expected}; "
                "run `semsearch index repair`"]
    return []


def rebuild(conn: sqlite3.Connection) -> int:
    """Refill both filter indexes from the documents (inside the caller's write transaction);
    returns the metadata values written."""
    conn.execute("DELETE FROM metadata_values")
    conn.execute(migrations.FILL_METADATA_VALUES)
    conn.execute("INSERT INTO documents_text (documents_text) VALUES ('rebuild')")
    conn.execute("UPDATE info SET value = CAST(value AS INTEGER) + 1 WHERE key = ?", (migrations.FILTER_EPOCH,))
    return conn.execute("SELECT count(*) FROM metadata_values").fetchone()[0]
