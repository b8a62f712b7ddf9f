"""Reading BEIR benchmark files: ``queries.jsonl`` and ``qrels/*.tsv``.

* ``queries.jsonl`` -- one JSON object per line, ``{"_id": ..., "text": ...}``
  (:func:`load_queries`; with ``problems``, bad lines are reported and skipped
  instead of stopping the run);
* ``qrels/*.tsv`` -- ``query-id <TAB> corpus-id <TAB> score`` with an optional
  header line (:func:`load_qrels`).

Every mistake is an ``InputError`` naming the file and line.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from dataclasses import dataclass
from typing import Iterator

from index.errors import InputError, SemsearchError
from index.storage.filter_language import parse as parse_filter

_INT_RE = re.compile(r"[+-]?[0-9]+")

# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------


@dataclass
class EvalQuery:
    """One evaluation query: its id (always a ``str``) and NFC-normalised text."""

    id: str
    text: str
    where: dict | None = None  # the line's own metadata filter ("where": {...}), if any


def _lines(path: str | os.PathLike[str], problems: list[str] | None = None) -> Iterator[tuple[int, str]]:
    """Yield ``(line number, decoded line without newline)`` for a UTF-8 file.

    A UTF-8 byte-order mark on the first line is dropped. Unreadable files
    raise :class:`InputError`; so do undecodable lines, unless ``problems`` is
    given: then each is described there (``FILE:LINE: ...``) and skipped.
    """
    name = os.fspath(path)
    try:
        handle = open(name, "rb")
    except OSError as exc:
        raise InputError(f"{name}: cannot read file: {exc.strerror or exc}") from None
    with handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                message = f"{name}:{number}: not valid UTF-8 ({exc.reason})"
                if problems is None:
                    raise InputError(message) from None
                problems.append(message)
                continue
            yield number, line.rstrip("\r\n")


def load_queries(path: str | os.PathLike[str], problems: list[str] | None = None) -> list[EvalQuery]:
    """Read a BEIR ``queries.jsonl`` file, in file order.

    Each non-blank line must be a JSON object with an id (``"_id"``, or
    ``"id"`` when ``"_id"`` is absent; a string or an integer) and a string
    ``"text"``; an optional ``"where"`` is the query's own metadata filter
    (``index.storage.filter_language``). Other keys (e.g. ``"metadata"``) are ignored. Ids are returned
    as ``str`` and the text is NFC-normalised. Blank lines are skipped.

    Raises :class:`InputError` (``"FILE:LINE: ..."``) for invalid JSON, a
    missing or unusable id or text, and a repeated id. With ``problems`` (a
    list), such lines are described there and skipped instead, and so are
    queries with empty text: a batch run answers every other query.
    """
    name = os.fspath(path)
    queries: list[EvalQuery] = []
    seen: dict[str, int] = {}
    for number, line in _lines(path, problems):
        if not line.strip():
            continue
        where = f"{name}:{number}"
        try:
            query = _query_line(line, where, seen, number, skip_empty=problems is not None)
        except InputError as exc:
            if problems is None:
                raise
            problems.append(str(exc))
            continue
        queries.append(query)
    return queries


def _query_id(value: object) -> str | None:
    """Return a query id as ``str``; ``None`` if it is not a usable id."""
    if isinstance(value, bool):  # bool is an int subclass; true/false is no id
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _query_line(line: str, where: str, seen: dict[str, int], number: int, skip_empty: bool) -> EvalQuery:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: invalid JSON ({exc.msg})") from None
    if not isinstance(record, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(record).__name__}")
    key = "_id" if "_id" in record else "id"
    if key not in record:
        raise InputError(f'{where}: missing query id ("_id")')
    query_id = _query_id(record[key])
    if query_id is None:
        raise InputError(f'{where}: "{key}" must be a non-empty string or an integer')
    text = record.get("text")
    if not isinstance(text, str):
        raise InputError(f'{where}: query {query_id!r} has no string "text"')
    if query_id in seen:
        raise InputError(f"{where}: duplicate query id {query_id!r} (first on line {seen[query_id]})")
    if skip_empty and not text.strip():
        raise InputError(f"{where}: query {query_id!r} is empty")
    filter_ = record.get("where")
    if filter_ is not None:
        try:
            parse_filter(filter_, "where")
        except SemsearchError as exc:
            raise InputError(f"{where}: query {query_id!r}: {exc}") from None
    seen[query_id] = number
    return EvalQuery(id=query_id, text=unicodedata.normalize("NFC", text), where=filter_ or None)


def load_qrels(path: str | os.PathLike[str]) -> dict[str, dict[str, int]]:
    """Read BEIR qrels: ``query-id <TAB> corpus-id <TAB> score`` per line.

    The first line is treated as a header, and skipped, when its third field is
    not an integer (BEIR files start with ``query-id  corpus-id  score``).
    Blank lines are skipped. Scores ``<= 0`` are kept as ``0`` (judged
    non-relevant). A pair listed twice with the same score is accepted once.

    Returns ``{query id: {doc id: score}}``. Raises :class:`InputError`
    (``"FILE:LINE: ..."``) for a wrong number of fields, an empty id, a
    non-integer score, or a pair listed twice with different scores.
    """
    name = os.fspath(path)
    qrels: dict[str, dict[str, int]] = {}
    first = True
    for number, line in _lines(path):
        if not line.strip():
            continue
        where = f"{name}:{number}"
        fields = [field.strip() for field in line.split("\t")]
        if len(fields) != 3:
            raise InputError(
                f"{where}: expected 3 tab-separated fields "
                f"(query-id, corpus-id, score), got {len(fields)}"
            )
        query_id, doc_id, score_text = fields
        if first:
            first = False
            if not _INT_RE.fullmatch(score_text):
                continue  # header line
        if not _INT_RE.fullmatch(score_text):
            raise InputError(f"{where}: score {score_text!r} is not an integer")
        if not query_id or not doc_id:
            raise InputError(f"{where}: empty query id or corpus id")
        score = max(int(score_text), 0)
        judged = qrels.setdefault(query_id, {})
        if doc_id in judged and judged[doc_id] != score:
            raise InputError(
                f"{where}: conflicting score {score} for query {query_id!r}, "
                f"doc {doc_id!r} (already {judged[doc_id]})"
            )
        judged[doc_id] = score
    return qrels


