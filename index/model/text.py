"""Text normalisation and the Hangul checks every path shares (no heavy imports)."""

from __future__ import annotations

import unicodedata


def normalize_text(text: str) -> str:
    """Unicode NFC, so that Hangul syllables typed as jamo and as syllables are the same text."""
    return unicodedata.normalize("NFC", text)


def has_hangul(text: str) -> bool:
    """True when ``text`` holds a Hangul syllable or a conjoining jamo."""
    return any("\uac00" <= ch <= "\ud7a3" or "\u1100" <= ch <= "\u11ff" for ch in text)


def is_jamo_piece(token: str) -> bool:
    """True when a token holds conjoining jamo: what an accent-stripping tokenizer makes of a syllable."""
    return any("\u1100" <= ch <= "\u11ff" for ch in token)


def _joins_previous(ch: str) -> bool:
    """True when ``ch`` may compose with the character before it under NFC: a combining mark, or a
    Hangul medial vowel or final consonant jamo (which compose into a syllable)."""
    return unicodedata.combining(ch) != 0 or "\u1160" <= ch <= "\u11ff" or "\u0300" <= ch <= "\u036f"


def nfc_with_spans(text: str) -> tuple[str, list[int], list[int]]:
    """``(normalize_text(text), start, end)``: character ``i`` of the normalised text comes from
    ``text[start[i]:end[i]]``, so spans found in the normalised text map back to the original.

    The text is cut into clusters (a character and the marks or jamo that may join it) that are
    normalised one by one; when that does not reproduce the whole text's NFC (rare compositions of
    two base characters), every character maps to the whole text."""
    nfc = normalize_text(text)
    if nfc == text:
        idx = list(range(len(text)))
        return nfc, idx, [i + 1 for i in idx]
    starts: list[int] = []
    ends: list[int] = []
    pieces: list[str] = []
    i = 0
    while i < len(text):
        j = i + 1
        while j < len(text) and _joins_previous(text[j]):
            j += 1
        piece = normalize_text(text[i:j])
        pieces.append(piece)
        starts += [i] * len(piece)
        ends += [j] * len(piece)
        i = j
    if "".join(pieces) != nfc:
        return nfc, [0] * len(nfc), [len(text)] * len(nfc)
    return nfc, starts, ends
