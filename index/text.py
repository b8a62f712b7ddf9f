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
