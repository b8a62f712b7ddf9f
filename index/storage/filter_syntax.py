"""The short filter syntax of ``--where`` and ``GET /search?where=``, and ``--filter JSON``.

One clause per ``--where`` (clauses are ANDed):

- ``lang=en`` — equality, as before (the value is text, which also finds a
  number or boolean with the same text: ``year=2020``, ``archived=true``);
- ``lang!=en`` — not equal (documents without the key included);
- ``year>=2021``, ``year>2020``, ``year<2024``, ``date<=2021-06-30`` — ranges on a
  number, or on an ISO date;
- ``lang in en,ko`` and ``lang not in en,ko`` — one of (or none of) the listed values;
- ``text~E1234`` — the document text contains ``E1234``;
- ``archived exists`` and ``archived missing`` — the key is (or is not) set.

``--filter`` (and ``where={...}`` on HTTP) takes the full JSON language of
``filter_language``. Both are turned into that language and checked there, so
a mistake is one ``FilterError`` line naming the clause.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable

from . import filter_language
from .filter_language import FilterError

_COMPARE = re.compile(r"^(?P<key>[^=!<>~]*?)\s*(?P<op>!=|>=|<=|=|>|<|~)\s*(?P<value>.*)$", re.S)
_IN = re.compile(r"^(?P<key>.+?)\s+(?P<op>not\s+in|in)\s+(?P<values>.*)$", re.S)
_EXISTS = re.compile(r"^(?P<key>.+?)\s+(?P<op>exists|missing)\s*$", re.S)
_OPS = {"!=": "$ne", ">=": "$gte", "<=": "$lte", ">": "$gt", "<": "$lt"}
TEXT_KEY = "text"  # text~X: the document text


def clause(text: str, label: str = "--where") -> dict[str, Any]:
    """One short clause as a JSON filter (checked)."""
    at = f"{label} {text!r}"
    found = _COMPARE.match(text)
    if found and not _IN.match(found["key"]):
        key, op, value = found["key"].strip(), found["op"], found["value"].strip()
        if not key:
            raise FilterError(at, f"no key before {op!r} (expected KEY{op}VALUE)")
        if op == "~":
            if key != TEXT_KEY:
                raise FilterError(at, f"~ searches the document text: write text~{value or 'WORDS'}")
            out: dict[str, Any] = {"$contains": value}
        elif op == "=":
            out = {key: found["value"]}  # as before: the value exactly as given
        elif op == "!=":
            out = {key: {"$ne": found["value"]}}
        else:
            out = {key: {_OPS[op]: _number(value)}}
    elif (found := _IN.match(text)) is not None:
        values = [v.strip() for v in found["values"].split(",")]
        if not any(values):
            raise FilterError(at, "no values after 'in' (expected KEY in A,B,C)")
        op = "$in" if found["op"] == "in" else "$nin"
        out = {found["key"].strip(): {op: [v for v in values if v]}}
    elif (found := _EXISTS.match(text)) is not None:
        out = {found["key"].strip(): {"$exists": found["op"] == "exists"}}
    else:
        raise FilterError(at, "expected key=value, key!=value, key>=N (> < <=), key in a,b, "
                              "text~words or key exists")
    try:
        filter_language.parse(out, at)
    except FilterError as exc:  # the clause names the place; the JSON path inside it would only confuse
        raise FilterError(at, exc.problem) from None
    return out


def json_filter(text: str, label: str = "--filter") -> dict[str, Any]:
    """A JSON filter given as text (checked)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FilterError(f"{label} line {exc.lineno} column {exc.colno}", f"not valid JSON ({exc.msg})") from None
    filter_language.parse(value, label)
    return value


def combine(clauses: Iterable[str] = (), json_text: str | None = None, label: str = "--where"
            ) -> dict[str, Any] | None:
    """The filter of some short clauses (a clause starting with ``{`` is JSON) and a JSON filter,
    ANDed; None when there is none. Plain ``KEY=VALUE`` clauses on distinct keys stay one object,
    as they always were."""
    parts = [json_filter(c, label) if c.lstrip().startswith("{") else clause(c, label) for c in clauses]
    if json_text is not None:
        parts.append(json_filter(json_text, "--filter" if label == "--where" else label))
    parts = [p for p in parts if p]
    if not parts:
        return None
    simple = all(len(p) == 1 and not isinstance(next(iter(p.values())), dict)
                 and not filter_language.is_operator(next(iter(p))) for p in parts)
    keys = [next(iter(p)) for p in parts] if simple else []
    if simple and len(set(keys)) == len(keys):
        return {k: v for p in parts for k, v in p.items()}
    return parts[0] if len(parts) == 1 else {"$and": parts}


def _number(value: str) -> Any:
    """A range bound: a number when it reads as one, else the text (an ISO date, checked later)."""
    try:
        return int(value)
    except ValueError:
        pass
    try:
        number = float(value)
    except ValueError:
        return value
    return number if number == number and abs(number) != float("inf") else value
