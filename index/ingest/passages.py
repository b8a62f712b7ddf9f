"""Passages: a document split into overlapping token windows that fit the model, and encoded.

``split_passages`` cuts one tokenised text; ``encode_documents`` splits a batch
of documents and encodes all their windows in one length-sorted run.
Each passage keeps its content token ids (encoded as they are, so no word is
re-tokenised differently) and the character span it covers in the original
text. Spans are widened so that together they cover the whole text in order:
the first starts at 0, the last ends at ``len(text)``, and with no overlap
each passage ends where the next one starts. No character is lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from ..records import Passage


@dataclass(frozen=True)
class PassageSpan:
    order: int
    start: int  # character offsets into the document text
    end: int
    token_ids: "list[int] | np.ndarray"


def split_passages(
    ids,
    offsets,
    text_length: int,
    window: int,
    overlap: int,
) -> list[PassageSpan]:
    """Token windows of ``window`` tokens (fewer only for a short text).

    Consecutive windows share ``overlap`` tokens; the last one shares at least
    that many, since it ends at the last token.
    """
    if window < 1:
        raise ValueError("window must be at least 1 token")
    if not 0 <= overlap < window:
        raise ValueError(f"passage overlap must be between 0 and {window - 1} tokens")
    if len(ids) == 0:
        return []
    step = window - overlap
    starts = [0]
    while starts[-1] + window < len(ids):
        # The last window is pulled back to end at the last token, so it is as
        # long as the others: a short tail would be scored on a few words alone
        # (with mean pooling such fragments match generic queries too well).
        starts.append(min(starts[-1] + step, len(ids) - window))
    spans = []
    for order, first in enumerate(starts):
        last = min(first + window, len(ids)) - 1
        start = 0 if order == 0 else int(offsets[first][0])
        end = text_length if order == len(starts) - 1 else int(offsets[last][1])
        spans.append(PassageSpan(order, start, end, ids[first : last + 1]))
    # Without overlap, close any gap (whitespace or dropped characters) between neighbours.
    for i in range(len(spans) - 1):
        if spans[i].end < spans[i + 1].start:
            spans[i] = PassageSpan(spans[i].order, spans[i].start, spans[i + 1].start, spans[i].token_ids)
    return spans


@dataclass
class EncodedDocument:
    """A document's passages and their vectors (one row per passage)."""

    passages: list[Passage]
    vectors: np.ndarray


def document_spans(encoder, text: str, overlap: int) -> list[PassageSpan]:
    """The passages ``encoder`` makes of one text."""
    (tok,) = encoder.tokenize([text])
    return split_passages(tok.ids, tok.offsets, len(text), encoder.window, overlap)


def encode_documents(encoder, texts: Mapping[str, str], overlap: int,
                     progress: Callable[[int], None] | None = None) -> dict[str, EncodedDocument]:
    """Split each text into token windows and encode all windows of the batch together.

    Progress is reported in documents, spread evenly over the encoded windows.
    """
    doc_ids = list(texts)
    tokenized = encoder.tokenize([texts[d] for d in doc_ids])
    spans_of = {
        doc_id: split_passages(tok.ids, tok.offsets, len(texts[doc_id]), encoder.window, overlap)
        for doc_id, tok in zip(doc_ids, tokenized)
    }
    windows = [span.token_ids for spans in spans_of.values() for span in spans]
    reported = done = 0

    def tick(n_windows: int) -> None:
        nonlocal reported, done
        done += n_windows
        target = len(doc_ids) * done // max(1, len(windows))
        if target > reported:
            progress(target - reported)
            reported = target

    vectors = encoder.encode_ids(windows, progress=tick if progress else None)
    if progress and reported < len(doc_ids):
        progress(len(doc_ids) - reported)
    out: dict[str, EncodedDocument] = {}
    i = 0
    for doc_id, spans in spans_of.items():
        text = texts[doc_id]
        out[doc_id] = EncodedDocument(
            [Passage(s.order, s.start, s.end, text[s.start : s.end]) for s in spans], vectors[i : i + len(spans)])
        i += len(spans)
    return out
