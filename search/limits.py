"""What one request to ``semsearch serve`` may cost, and what a client without the token may see.

``Limits`` holds the bounds (each a ``serve`` option; the defaults are safe for a help-desk
front end): queries per request, characters per query and per embedded text, texts per
``/embed``, hits per request (``k`` times the queries), document text returned with a hit,
bytes of one response, items waiting in the micro-batching queue, and how long a request body
may take to arrive. A request past a bound is refused at once with 413 (too much asked) or
503 with ``Retry-After`` (the queue is full), before any model call.

``redact`` keeps absolute paths (the index folder, a model folder) out of what an
unauthenticated client reads in ``/health`` and ``/index``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Limits:
    max_queries: int = 64  # queries in one POST /search
    max_query_chars: int = 2_000  # one query or FAQ question
    max_texts: int = 64  # texts in one POST /embed
    max_text_chars: int = 20_000  # one text to embed
    max_hits: int = 10_000  # k x queries of one request
    hit_text_chars: int = 2_000  # document text sent with a hit (its passage is always whole)
    max_response_bytes: int = 16 * 1024 * 1024  # one response body
    max_queue: int = 1_024  # items waiting for the model, all clients together
    body_seconds: float = 30.0  # a request body must arrive within this
    max_documents: int = 10_000  # documents in one POST /documents


class TooMuch(Exception):
    """A request over one of the limits: 413 with this message."""


def check_queries(queries: list[str], k: int, limits: Limits) -> None:
    if len(queries) > limits.max_queries:
        raise TooMuch(f"{len(queries)} queries in one request; at most {limits.max_queries} "
                      "(send several requests, or start the server with a larger --max-queries)")
    for n, query in enumerate(queries, 1):
        check_chars(query, limits.max_query_chars, f"query {n}" if len(queries) > 1 else "the query",
                    "--max-query-chars")
    if k * len(queries) > limits.max_hits:
        raise TooMuch(f"k={k} for {len(queries)} queries asks for {k * len(queries):,} hits; at most "
                      f"{limits.max_hits:,} per request (--max-hits)")


def check_texts(texts: list[str], limits: Limits) -> None:
    if len(texts) > limits.max_texts:
        raise TooMuch(f"{len(texts)} texts in one request; at most {limits.max_texts} (--max-texts)")
    for n, text in enumerate(texts, 1):
        check_chars(text, limits.max_text_chars, f"text {n}", "--max-text-chars")


def check_chars(text: Any, limit: int, what: str, option: str) -> None:
    if isinstance(text, str) and len(text) > limit:
        raise TooMuch(f"{what} has {len(text):,} characters; at most {limit:,} ({option})")


def trim_hits(outcome: dict[str, Any], chars: int, full_text: bool) -> dict[str, Any]:
    """A search outcome (``SearchOutcome.as_dict``) with each hit's document text cut to ``chars``
    characters (marked ``text_truncated``) unless ``full_text``; the passage stays whole."""
    if full_text or not outcome.get("hits"):
        return outcome
    hits = []
    for hit in outcome["hits"]:
        text = hit.get("text") or ""
        if len(text) > chars:
            hit = {**hit, "text": text[:chars], "text_truncated": True}
        hits.append(hit)
    return {**outcome, "hits": hits}


ABSOLUTE_PATH = re.compile(r"(?<![\w.])/(?:[^\s'\":,;()]+/)*[^\s'\":,;()]*")


def redact(text: str | None, index: Path) -> str | None:
    """``text`` with the index folder shown by its name and any other absolute path as ``<path>``."""
    if text is None:
        return None
    for form in {str(index), str(Path(index).resolve())}:
        text = text.replace(form, Path(index).name)
    return ABSOLUTE_PATH.sub("<path>", text)


def public_info(info: dict[str, Any], index: Path) -> dict[str, Any]:
    """``/index`` for a client without the token: the folder by its name, a model folder by its name."""
    out = dict(info)
    out["path"] = Path(index).name
    if isinstance(out.get("model"), str) and out["model"].startswith("/"):
        out["model"] = Path(out["model"]).name
    return out
