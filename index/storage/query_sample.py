"""Sample queries for the whitening fit: texts of questions users ask, recorded in an index (never labels).

An index's whitening is fitted on its passages and a background of ordinary
sentences (``storage.whitened``). Queries are often unlike either (a claim,
a customer's question, against abstracts or FAQ wording); pooling texts of
real queries into the fit makes the transform fit the query side too.
``record_queries`` records such texts (past queries from a log, the questions
of a calibration) and refits the transform without encoding any document;
every later fit (a rebuild, at any layer, or the refit when the index has
doubled) encodes them again. Measured with the embedded model (layer -2,
whitened): SciFact's 809 claims outside its test set raised the 300 test
claims' nDCG@10 from 0.517 to 0.570 (hybrid 0.668 to 0.685), and half of
StackFAQ's rewordings raised the other half's from 0.912 to 0.924, before
fits pooled the corpus's sentences; since, SciFact's claims add less (0.564
to 0.572: docs/quality.md). ``semsearch index fit-queries`` is the command;
``semsearch faq calibrate`` records its questions this way.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Iterable

import numpy as np

from ..errors import InputError, SemsearchError
from . import whitened


def record_queries(index: Any, texts: Iterable[str]) -> int:
    """Record in ``index`` (an ``index.Index``) the distinct non-empty ``texts`` (at most ``whitened.MAX_QUESTIONS``: a fixed sample of
    them) as the queries of the index's whitening fit, replacing any recorded before, and refit
    it; returns how many are recorded. An index that does not whiten is refused (nothing changes);
    no texts clears the record."""
    config = index.config  # one read of the index's settings
    if not (config.get(whitened.FIT) or {}).get("whiten"):
        reason = (config.get(whitened.FIT) or {}).get("reason") or "it records no whitening"
        raise SemsearchError(f"index {index.path} does not whiten its vectors ({reason}); sample queries "
                             "only serve a whitening fit (index rebuild --whitening on)")
    chosen = sorted({t.strip() for t in texts if isinstance(t, str) and t.strip()})
    if len(chosen) > whitened.MAX_QUESTIONS:  # a fixed sample: the same texts give the same fit
        picked = np.random.default_rng(0).choice(len(chosen), whitened.MAX_QUESTIONS, replace=False)
        chosen = [chosen[i] for i in sorted(picked)]
    if (config.get(whitened.QUESTIONS) or []) != chosen:
        with index.session() as writer:
            writer.record({whitened.QUESTIONS: chosen})
            writer.refit(force=True)
    return len(chosen)


TEXT_FIELDS = ("text", "question", "query")  # tried in this order in a JSONL line


def read_queries(path: str | os.PathLike, text_field: str | None = None) -> list[str]:
    """Query texts from a file (``-``: standard input): JSONL objects (``text_field``, else the first of
    ``TEXT_FIELDS`` a line has; ids and labels are ignored) or one query a line."""
    name = os.fspath(path)
    try:
        raw = sys.stdin.read() if name == "-" else open(name, encoding="utf-8-sig").read()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{name}: cannot read the queries ({exc})") from None
    lines = [(n, line) for n, line in enumerate(raw.splitlines(), start=1) if line.strip()]
    if not lines or not lines[0][1].lstrip().startswith("{"):
        return [line.strip() for _, line in lines]
    out = []
    fields = (text_field,) if text_field else TEXT_FIELDS
    for number, line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{name}:{number}: invalid JSON ({exc.msg})") from None
        text = next((record[f] for f in fields if isinstance(record, dict) and isinstance(record.get(f), str)), None)
        if text is None:
            raise InputError(f"{name}:{number}: no text field ({' or '.join(fields)}); name it with --text-field")
        out.append(text)
    return out
