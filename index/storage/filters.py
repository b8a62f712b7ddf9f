"""Metadata filters as SQL: ``{key: value, ...}``, every key equal to its value, ANDed.

Keys and values are bound parameters (no SQL is built from user text). A string value also
matches a number or boolean with the same text, so ``--where year=2020`` finds
``{"year": 2020}``. A filter SQLite cannot evaluate (too many keys for its expression depth,
an integer past 64 bits, text that is not valid Unicode) is one ``SemsearchError``, never a
crash of the query that carried it.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import numpy as np

from ..errors import SemsearchError

MAX_FILTER_KEYS = 64  # keys one metadata filter may name (SQLite's expression depth is bounded)


def passage_ids(conn: sqlite3.Connection, where: dict[str, Any]) -> np.ndarray:
    """Passage ids of the documents whose metadata equals every ``key: value`` in ``where``."""
    if len(where) > MAX_FILTER_KEYS:
        raise SemsearchError(f"a filter names {len(where)} keys; at most {MAX_FILTER_KEYS} are allowed")
    clauses, params = [], []
    for key, value in where.items():
        # json_each compares keys as plain strings: any key works, quotes included.
        test, args = _value_test(value)
        clauses.append(f"EXISTS (SELECT 1 FROM json_each(d.metadata) je WHERE je.key = ? AND {test})")
        params += [str(key), *args]
    sql = "SELECT p.id FROM passages p JOIN documents d ON d.id = p.document_id"
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    try:
        ids = [r[0] for r in conn.execute(sql, params)]
    except (OverflowError, sqlite3.Error, UnicodeEncodeError) as exc:  # values SQLite cannot take
        raise SemsearchError(f"the filter cannot be evaluated ({_short(exc)})") from None
    return np.asarray(ids, dtype=np.int64)


def _short(exc: Exception) -> str:
    if isinstance(exc, OverflowError):
        return "a number is outside SQLite's 64-bit integer range"
    if isinstance(exc, UnicodeEncodeError):
        return "a key or value is not valid Unicode text"
    return str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__


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
