"""The metadata filter language: a JSON filter checked and turned into a small tree.

Modelled on Chroma and MongoDB. A filter is an object whose entries are all
true of a document (ANDed):

- ``{"lang": "en"}`` — equality, as before this language existed: a string also
  matches a number or boolean with the same text (``"2020"`` finds ``2020``,
  ``"true"`` finds ``true``); a number matches numbers; ``true``/``false``/``null``
  match themselves; an array or object matches an equal JSON value;
- ``{"year": {"$gte": 2021, "$lt": 2024}}`` — operators on one key (ANDed):
  ``$eq $ne $gt $gte $lt $lte $in $nin $exists``. Ranges take a number (numeric
  values are compared) or an ISO date or date-time (text values are compared
  as text, which orders ISO dates); ``$ne`` and ``$nin`` also match documents
  without the key, as in MongoDB; ``$in``/``$nin`` take a list of plain values;
  ``$exists`` takes ``true`` or ``false``;
- ``{"$and": [F, ...]}``, ``{"$or": [F, ...]}``, ``{"$not": F}`` — combinations;
- ``{"$contains": "E1234"}`` — the document text contains that text (case
  sensitive; answered by the FTS5 trigram index of the document texts).

Only top-level metadata keys are filtered; a key of ``$`` and letters is an
operator, any other key (``$.lang`` too) a metadata key. A malformed filter, an unknown
operator or a value of the wrong type is a ``FilterError`` naming where in the
filter it is (``where.$or[1].year.$gte``). Nothing here touches SQL: the
evaluation is ``filter_sql`` (parameters only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Union

from ..errors import SemsearchError

MAX_CLAUSES = 200  # comparisons and $contains one filter may hold (each is one indexed lookup)
MAX_DEPTH = 32  # nesting of $and/$or/$not
MAX_IN_VALUES = 100_000  # values of one $in/$nin
RANGE_OPS = ("$gt", "$gte", "$lt", "$lte")
KEY_OPS = ("$eq", "$ne", *RANGE_OPS, "$in", "$nin", "$exists")
TOP_OPS = ("$and", "$or", "$not", "$contains")


class FilterError(SemsearchError):
    """A filter that is not valid: ``position`` says where (``where.$or[0].year``)."""

    def __init__(self, position: str, problem: str):
        super().__init__(f"invalid filter at {position}: {problem}")
        self.position = position
        self.problem = problem


@dataclass(frozen=True)
class Compare:
    """One comparison of a metadata key: ``op`` is eq, gt, gte, lt, lte, in or exists."""

    key: str
    op: str
    value: Any  # eq: a JSON value; ranges: a number or an ISO text; in: a tuple of values; exists: True


@dataclass(frozen=True)
class Contains:
    """The document text contains ``text``."""

    text: str


@dataclass(frozen=True)
class All:
    parts: tuple


@dataclass(frozen=True)
class Any_:
    parts: tuple


@dataclass(frozen=True)
class Not:
    part: Any


Node = Union[Compare, Contains, All, Any_, Not]


def parse(where: Any, position: str = "where") -> Node | None:
    """The tree of a filter; None for no filter (None or ``{}``)."""
    if where is None:
        return None
    counter = [0]
    node = _filter(where, position, counter, 0)
    return None if node == All(()) else node


def _filter(obj: Any, at: str, counter: list, depth: int) -> Node:
    if depth > MAX_DEPTH:
        raise FilterError(at, f"nested deeper than {MAX_DEPTH} levels")
    if not isinstance(obj, dict):
        raise FilterError(at, f"expected an object like {{\"key\": value}}, found {_kind(obj)}")
    parts = []
    for key, value in obj.items():
        if not isinstance(key, str):
            raise FilterError(at, f"a key must be text, found {_kind(key)}")
        here = f"{at}.{key}"
        if is_operator(key):
            parts.append(_top(key, value, here, counter, depth))
        else:
            parts.extend(_key_clauses(key, value, here, counter))
    return parts[0] if len(parts) == 1 else All(tuple(parts))


def _top(op: str, value: Any, at: str, counter: list, depth: int) -> Node:
    if op in ("$and", "$or"):
        if not isinstance(value, list) or not value:
            raise FilterError(at, f"{op} takes a non-empty list of filters, found {_kind(value)}")
        parts = tuple(_filter(v, f"{at}[{i}]", counter, depth + 1) for i, v in enumerate(value))
        return All(parts) if op == "$and" else Any_(parts)
    if op == "$not":
        return Not(_filter(value, at, counter, depth + 1))
    if op == "$contains":
        if not isinstance(value, str) or not value:
            raise FilterError(at, f"$contains takes non-empty text, found {_kind(value)}")
        _count(counter, at)
        return Contains(_text(value, at))
    if op in KEY_OPS:
        raise FilterError(at, f"{op} applies to a key: {{\"key\": {{\"{op}\": ...}}}}")
    raise FilterError(at, f"unknown operator {op} (known: {', '.join(TOP_OPS + KEY_OPS)})")


def _key_clauses(key: str, value: Any, at: str, counter: list) -> list[Node]:
    _text(key, at)
    if not isinstance(value, dict) or not value or not any(is_operator(k) for k in value):
        _count(counter, at)
        return [Compare(key, "eq", _plain(value, at))]  # {} and {"a": 1} are JSON values to equal
    out: list[Node] = []
    for op, arg in value.items():
        here = f"{at}.{op}"
        if not is_operator(op):
            raise FilterError(here, "an object of operators cannot also hold plain keys")
        if op not in KEY_OPS:
            hint = " ($contains is for the document text, at the top: {\"$contains\": ...})" if op == "$contains" else ""
            raise FilterError(here, f"unknown operator {op} (known: {', '.join(KEY_OPS)}){hint}")
        _count(counter, here)
        if op in ("$eq", "$ne"):
            node: Node = Compare(key, "eq", _plain(arg, here))
            out.append(Not(node) if op == "$ne" else node)
        elif op in RANGE_OPS:
            out.append(Compare(key, op[1:], _bound(arg, here)))
        elif op in ("$in", "$nin"):
            if not isinstance(arg, list) or not arg:
                raise FilterError(here, f"{op} takes a non-empty list of values, found {_kind(arg)}")
            if len(arg) > MAX_IN_VALUES:
                raise FilterError(here, f"{op} has {len(arg):,} values; at most {MAX_IN_VALUES:,} are allowed")
            values = tuple(_scalar(v, f"{here}[{i}]") for i, v in enumerate(arg))
            node = Compare(key, "in", values)
            out.append(Not(node) if op == "$nin" else node)
        else:  # $exists
            if not isinstance(arg, bool):
                raise FilterError(here, f"$exists takes true or false, found {_kind(arg)}")
            node = Compare(key, "exists", True)
            out.append(node if arg else Not(node))
    return out


def is_operator(key: Any) -> bool:
    """``$`` and letters (``$gte``, ``$foo``); other keys, ``$[0]`` or ``$.lang`` included, are metadata
    keys, as they were before operators existed."""
    return isinstance(key, str) and len(key) > 1 and key[0] == "$" and key[1:].isascii() and key[1:].isalpha()


def _count(counter: list, at: str) -> None:
    counter[0] += 1
    if counter[0] > MAX_CLAUSES:
        raise FilterError(at, f"a filter may hold at most {MAX_CLAUSES} comparisons")


def _plain(value: Any, at: str) -> Any:
    """A JSON value to compare for equality (numbers finite, text valid Unicode)."""
    if isinstance(value, (list, dict)):
        _check_json(value, at, 0)
        return value
    return _scalar(value, at)


def _check_json(value: Any, at: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise FilterError(at, f"a value nested deeper than {MAX_DEPTH} levels")
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else None
    if items is None:
        _scalar(value, at)
        return
    for k, v in items:
        if isinstance(value, dict):
            if not isinstance(k, str):
                raise FilterError(at, f"an object key must be text, found {_kind(k)}")
            _text(k, at)
        _check_json(v, at, depth + 1)


def _scalar(value: Any, at: str) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise FilterError(at, "a number is outside the 64-bit integer range")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise FilterError(at, "a number must be finite")
        return value
    if isinstance(value, str):
        return _text(value, at)
    raise FilterError(at, f"expected text, a number, true, false or null, found {_kind(value)}")


def _bound(value: Any, at: str) -> Any:
    """A range bound: a number, or an ISO date/date-time (compared as text)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _scalar(value, at)
    if isinstance(value, str) and is_iso_date(value):
        return value
    raise FilterError(at, f"a range takes a number or an ISO date such as 2021-06-30, found {_kind(value)}")


def is_iso_date(text: str) -> bool:
    if len(text) < 10 or not text[:4].isdigit() or text[4] != "-":
        return False
    try:
        (datetime if len(text) > 10 else date).fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _text(value: str, at: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise FilterError(at, "text is not valid Unicode (a lone surrogate)") from None
    if "\x00" in value:
        raise FilterError(at, "text holds a NUL character")
    return value


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:39] + "…"
        return f"the text {shown!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
