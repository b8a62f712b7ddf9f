"""Metadata filters evaluated: the allowed passage ids of a filter, through the filter indexes.

The language is ``filter_language`` (``{"year": {"$gte": 2021}}``, ``$or``,
``$contains`` ...); its SQL is ``filter_sql``, answered by the
``metadata_values`` and ``documents_text`` indexes that the triggers of
migration m002 keep with the documents. The ids of a filter are cached per
store and committed generation (every write bumps the generation, so a cached
set is never stale; a metadata-only update, which keeps the generation, bumps the
``filter_epoch`` that the cache also keys on). ``legacy_passage_ids`` is the scan this replaced (the
``json_each`` of every document's metadata, equality only), kept for
``bench/filters.py --legacy-scan``.

Keys and values are bound parameters (no SQL is built from user text). A filter
SQLite cannot evaluate is one ``SemsearchError``, never a crash of the query
that carried it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import weakref
from collections import OrderedDict
from typing import Any

import numpy as np

from ..errors import SemsearchError
from . import filter_language, filter_sql

MAX_FILTER_KEYS = 64  # keys one legacy (scanned) filter may name (SQLite's expression depth is bounded)
CACHE_ENTRIES = 32  # filters remembered per store
CACHE_IDS = 4_000_000  # passage ids remembered per store, all entries together

_caches: "weakref.WeakKeyDictionary[Any, _Cache]" = weakref.WeakKeyDictionary()
_caches_lock = threading.Lock()


class _Cache:
    """The allowed ids of recent filters of one store, for one generation at a time (LRU)."""

    def __init__(self):
        self.generation: Any = None
        self.entries: OrderedDict[str, np.ndarray] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, generation: Any, key: str) -> np.ndarray | None:
        with self.lock:
            if generation != self.generation:
                return None
            found = self.entries.get(key)
            if found is not None:
                self.entries.move_to_end(key)
            return found

    def put(self, generation: Any, key: str, ids: np.ndarray) -> None:
        with self.lock:
            if generation != self.generation:
                self.generation, self.entries = generation, OrderedDict()
            self.entries[key] = ids
            while len(self.entries) > CACHE_ENTRIES or (
                    len(self.entries) > 1 and sum(len(v) for v in self.entries.values()) > CACHE_IDS):
                self.entries.popitem(last=False)


def allowed_passage_ids(store: Any, generation: Any, where: Any) -> np.ndarray | None:
    """Passage ids of the documents that ``where`` matches, read inside the caller's snapshot of
    ``generation`` (None: no filter). Cached per store and generation: any value that changes with
    every write a filter can see (the snapshot passes its generation and the documents' epoch)."""
    node = filter_language.parse(where)
    if node is None:
        return None
    key = json.dumps(where, sort_keys=True, ensure_ascii=False)
    with _caches_lock:
        cache = _caches.setdefault(store, _Cache())
    found = cache.get(generation, key)
    if found is None:
        found = evaluate(store.conn, node)
        found.setflags(write=False)
        cache.put(generation, key, found)
    return found


def clear_cache() -> None:
    """Forget every cached filter (benchmarks time the uncached path this way)."""
    with _caches_lock:
        _caches.clear()


def passage_ids(conn: sqlite3.Connection, where: dict[str, Any]) -> np.ndarray:
    """Passage ids of the documents that ``where`` matches (every passage when it is empty)."""
    node = filter_language.parse(where)
    if node is None:
        return np.fromiter((r[0] for r in conn.execute("SELECT id FROM passages")), dtype=np.int64)
    return evaluate(conn, node)


def evaluate(conn: sqlite3.Connection, node: filter_language.Node) -> np.ndarray:
    sql, params = filter_sql.passage_query(node)
    try:
        return np.fromiter((r[0] for r in conn.execute(sql, params)), dtype=np.int64)
    except (OverflowError, sqlite3.Error, UnicodeEncodeError) as exc:  # values SQLite cannot take
        raise SemsearchError(f"the filter cannot be evaluated ({_short(exc)})") from None


def legacy_passage_ids(conn: sqlite3.Connection, where: dict[str, Any]) -> np.ndarray:
    """The scan before m002: passage ids of the documents whose metadata equals every
    ``key: value`` in ``where``, reading every document's metadata (benchmarks compare)."""
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
