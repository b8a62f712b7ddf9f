"""The passage splitter: windows fit, overlap as asked, and together cover the text in order."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from index.ingest.passages import split_passages


def tokens_of(text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """A stand-in tokenizer: one token per run of non-space characters."""
    ids, offsets, start = [], [], None
    for i, ch in enumerate(text + " "):
        if ch.isspace():
            if start is not None:
                ids.append(len(ids))
                offsets.append((start, i))
                start = None
        elif start is None:
            start = i
    return ids, offsets


@settings(max_examples=300, deadline=None)
@given(text=st.text(min_size=1, max_size=400), window=st.integers(1, 40), overlap_frac=st.floats(0, 0.99))
def test_passages_cover_the_text_in_order(text, window, overlap_frac):
    overlap = min(window - 1, int(window * overlap_frac))
    ids, offsets = tokens_of(text)
    spans = split_passages(ids, offsets, len(text), window, overlap)
    if not ids:
        assert spans == []
        return
    # Every token is in some passage, each passage fits the window, in order.
    covered = [t for s in spans for t in s.token_ids]
    assert set(covered) == set(ids)
    assert all(1 <= len(s.token_ids) <= window for s in spans)
    assert [s.order for s in spans] == list(range(len(spans)))
    # Character spans start at 0, end at len(text), never leave a gap and move forward.
    assert spans[0].start == 0 and spans[-1].end == len(text)
    for a, b in zip(spans, spans[1:]):
        assert b.start <= a.end and a.start < b.start
    # Windows are full length; consecutive ones share exactly `overlap` tokens,
    # except the last, which ends at the last token and may share more.
    if len(ids) >= window:
        assert all(len(s.token_ids) == window for s in spans)
    for a, b in zip(spans[:-2], spans[1:-1]):
        assert a.token_ids[-overlap:] == b.token_ids[:overlap] if overlap else set(a.token_ids).isdisjoint(b.token_ids)
    if len(spans) > 1:
        shared = len(set(spans[-2].token_ids) & set(spans[-1].token_ids))
        assert shared >= overlap
    # The spans' union reproduces the text exactly.
    rebuilt = "".join(text[max(s.start, spans[i - 1].end if i else 0) : s.end] for i, s in enumerate(spans))
    assert rebuilt == text


def test_short_text_is_one_passage():
    ids, offsets = tokens_of("  hello world  ")
    (span,) = split_passages(ids, offsets, 15, window=10, overlap=2)
    assert (span.start, span.end, span.token_ids) == (0, 15, [0, 1])


def test_windows_step_by_window_minus_overlap():
    ids, offsets = tokens_of(" ".join(str(i) for i in range(10)))
    spans = split_passages(ids, offsets, 19, window=4, overlap=1)
    assert [s.token_ids for s in spans] == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
    spans = split_passages(ids[:9], offsets[:9], 17, window=4, overlap=1)
    assert [s.token_ids for s in spans] == [[0, 1, 2, 3], [3, 4, 5, 6], [5, 6, 7, 8]]


def test_bad_overlap_is_refused():
    with pytest.raises(ValueError, match="overlap"):
        split_passages([1, 2], [(0, 1), (2, 3)], 3, window=4, overlap=4)
