"""A parsed filter (``filter_language``) as one SQL query over the filter indexes.

Each comparison is one lookup in ``metadata_values`` by its (key, value) index
(``migrations.m002_metadata_values``); ``$contains`` is one FTS5 trigram
match on ``documents_text``; ``$and``/``$or``/``$not`` are INTERSECT, UNION
and EXCEPT of those document sets. The passages of the resulting documents
are found through the passages' document index. No SQL is built from user
text: keys, values and the FTS phrase are bound parameters, and every
``$in`` list is one JSON parameter (``json_each``), whatever its length.
"""

from __future__ import annotations

import json
from typing import Any

from .filter_language import All, Any_, Compare, Contains, Node, Not

FTS_MIN = 3  # characters a trigram index can look up; a shorter $contains reads the texts
_RANGE_SQL = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_ALL_DOCUMENTS = "SELECT id FROM documents"


def passage_query(node: Node) -> tuple[str, list]:
    """``(sql, params)`` selecting the passage ids of the documents that ``node`` matches. A ``$not``
    at the top (``$ne``, ``$nin``) becomes ``NOT IN``, checked against the passages' document
    index, rather than the EXCEPT of every document id."""
    parts = node.parts if isinstance(node, All) else (node,)
    positive = [p for p in parts if not isinstance(p, Not)]
    negative = [p.part for p in parts if isinstance(p, Not)]
    tests, params = [], []
    if positive:
        docs, args = _compound("INTERSECT", positive) if len(positive) > 1 else documents_query(positive[0])
        tests.append(f"p.document_id IN ({docs})")
        params += args
    for part in negative:
        docs, args = documents_query(part)
        tests.append(f"p.document_id NOT IN ({docs})")
        params += args
    return "SELECT p.id FROM passages p WHERE " + " AND ".join(tests), params


def documents_query(node: Node) -> tuple[str, list]:
    """``(sql, params)`` of a compound SELECT of one column: the ids of the matching documents."""
    if isinstance(node, Compare):
        return _compare(node)
    if isinstance(node, Contains):
        if len(node.text) < FTS_MIN:
            return "SELECT id FROM documents WHERE instr(text, ?) > 0", [node.text]
        phrase = '"' + node.text.replace('"', '""') + '"'
        return ("SELECT d.id FROM documents d WHERE d.rowid IN "
                "(SELECT rowid FROM documents_text WHERE documents_text MATCH ?)"), [phrase]
    if isinstance(node, Not):
        inner, params = _term(node.part)
        return f"{_ALL_DOCUMENTS} EXCEPT {inner}", params
    if isinstance(node, Any_):
        return _compound("UNION", node.parts)
    if isinstance(node, All):
        positive = [p for p in node.parts if not isinstance(p, Not)]
        negative = [p.part for p in node.parts if isinstance(p, Not)]
        sql, params = _compound("INTERSECT", positive) if positive else (_ALL_DOCUMENTS, [])
        for part in negative:
            term, args = _term(part)
            sql, params = f"{sql} EXCEPT {term}", params + args
        return sql, params
    raise TypeError(f"not a filter node: {node!r}")  # pragma: no cover


def _term(node: Node) -> tuple[str, list]:
    """A node as one term of a compound SELECT (wrapped when it is a compound itself)."""
    sql, params = documents_query(node)
    return f"SELECT * FROM ({sql})", params


def _compound(op: str, parts) -> tuple[str, list]:
    terms = [_term(p) for p in parts]
    return f" {op} ".join(t for t, _ in terms), [a for _, args in terms for a in args]


def _compare(c: Compare) -> tuple[str, list]:
    base = "SELECT document_id FROM metadata_values WHERE key = ?"
    if c.op == "exists":
        return base, [c.key]
    if c.op in _RANGE_SQL:
        sign = _RANGE_SQL[c.op]
        if isinstance(c.value, str):  # an ISO date: text values, compared as text
            return f"{base} AND value_text {sign} ? AND type = 'text'", [c.key, c.value]
        return f"{base} AND value_num {sign} ? AND value_num IS NOT NULL", [c.key, c.value]
    values = c.value if c.op == "in" else (c.value,)
    return _equal_any(base, c.key, values)


def _equal_any(base: str, key: str, values) -> tuple[str, list]:
    """Documents whose ``key`` equals one of ``values`` (the loose equality of ``filter_language``)."""
    texts = [v for v in values if isinstance(v, str)]
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    bools = sorted({"true" if v else "false" for v in values if isinstance(v, bool)})
    nulls = any(v is None for v in values)
    nested = [v for v in values if isinstance(v, (list, dict))]
    selects: list[tuple[str, list]] = []
    if texts:  # text equals text, or a number's text; a boolean's name, case aside
        selects.append((f"{base} AND value_text IN (SELECT value FROM json_each(?)) "
                        f"AND type IN ('text', 'integer', 'real')", [key, _json(texts)]))
        selects.append((f"{base} AND value_text IN ('true', 'false') AND type IN ('true', 'false') "
                        "AND value_text IN (SELECT lower(value) FROM json_each(?))", [key, _json(texts)]))
    if numbers:
        # value_num is set for integer and real values only; naming no other column keeps the
        # lookup an equality on the covering (key, value_num) index
        selects.append((f"{base} AND value_num IN (SELECT value FROM json_each(?)) AND value_num IS NOT NULL",
                        [key, _json(numbers)]))
    for name in bools:
        selects.append((f"{base} AND value_text = ? AND type = ?", [key, name, name]))
    if nulls:
        selects.append((f"{base} AND value_text IS NULL AND type = 'null'", [key]))
    for value in nested:
        selects.append((f"{base} AND value_text = json(?) AND type IN ('array', 'object')", [key, _json(value)]))
    return " UNION ".join(s for s, _ in selects), [a for _, args in selects for a in args]


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)
