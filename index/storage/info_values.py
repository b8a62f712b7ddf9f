"""The ``info`` table's values, checked as they are read: a damaged value is one clear refusal.

SQLite's ``info`` table holds the index's configuration and its bookkeeping (``generation``,
``vectors_base``, ``next_passage_id``, ...) as JSON values. Every reader and writer reads them
through ``MetadataStore.get_info``, which passes them through :func:`checked`: a value that is not
JSON, or not of its key's type and range (a dimension of ``"abc"``, a generation of ``-1``, an
unknown pooling), raises ``IndexCorruptError`` naming the key, instead of failing later somewhere
in numpy or FAISS with a traceback. Keys it does not know (settings a user recorded) and values
older versions may have written differently pass as they are.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterable

from .. import options
from ..errors import IndexCorruptError


def _whole(low: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low


def _one_of(choices: Iterable[str]) -> Callable[[Any], bool]:
    allowed = set(choices)
    return lambda v: isinstance(v, str) and v in allowed


def _boolean(v: Any) -> bool:
    return isinstance(v, bool)


def _text(v: Any) -> bool:
    return isinstance(v, str) and v != ""


RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "generation": (_whole(0), "a whole number >= 0"),
    "vectors_base": (_whole(0), "a whole number >= 0"),
    "next_passage_id": (_whole(1), "a whole number >= 1"),
    "dimension": (_whole(1), "a whole number >= 1"),
    "max_length": (_whole(1), "a whole number >= 1"),
    "passage_tokens": (_whole(1), "a whole number >= 1"),
    "passage_overlap": (_whole(0), "a whole number >= 0"),
    "layer": (lambda v: isinstance(v, int) and not isinstance(v, bool), "a whole number"),
    "pooling": (_one_of(options.POOLINGS), f"one of {', '.join(options.POOLINGS)}"),
    "index_type": (lambda v: isinstance(v, str) and (v == options.AUTO_INDEX_TYPE or v in options.VECTOR_BACKENDS),
                   "a registered index type"),  # read at check time: a backend may be registered later
    "model": (_text, "a model name or folder"),
    "complete": (_boolean, "true or false"),
    "hybrid": (_boolean, "true or false"),
    "target_recall": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 1,
                      "a number in (0, 1]"),
    "search_tuning": (lambda v: v is None or isinstance(v, dict), "a tuning record or null"),
    "vector_seals": (lambda v: isinstance(v, dict), "a map of file seals"),
}


def damaged(key: str, shown: str, wants: str) -> IndexCorruptError:
    return IndexCorruptError(f"the index's SQLite info table is damaged: {key!r} is {shown[:60]}, not {wants}; "
                             "restore a backup of semsearch.db or rebuild the index from its documents")


def value(key: str, raw: str) -> Any:
    """The JSON value of one row, checked against its key's rule."""
    try:
        parsed = json.loads(raw)
    except (TypeError, ValueError):
        raise damaged(key, repr(raw), "JSON") from None
    rule = RULES.get(key)
    if rule is not None and not rule[0](parsed):
        raise damaged(key, json.dumps(parsed), rule[1])
    return parsed


def checked(rows: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """The ``info`` rows as a dict, each value checked (``IndexCorruptError`` for a damaged one)."""
    info = {key: value(key, raw) for key, raw in rows}
    if "vectors_base" in info and "generation" in info and info["vectors_base"] > info["generation"]:
        raise damaged("vectors_base", json.dumps(info["vectors_base"]),
                      f"a generation up to the committed one ({info['generation']})")
    return info
