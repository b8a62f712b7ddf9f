"""Split a tokenised document into overlapping token windows that fit the model.

Each passage keeps its content token ids (encoded as they are, so no word is
re-tokenised differently) and the character span it covers in the original
text. Spans are widened so that together they cover the whole text in order:
the first starts at 0, the last ends at ``len(text)``, and with no overlap
each passage ends where the next one starts. No character is lost.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
