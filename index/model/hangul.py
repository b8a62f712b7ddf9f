"""Keeping Hangul syllables whole in tokenizers that would cut them into jamo.

An uncased BERT tokenizer (uncased multilingual BERT, the embedded model)
lower-cases through Unicode NFD and strips accents, which decomposes every
Hangul syllable into conjoining jamo: ``배`` becomes ``ᄇ``, ``##ᅢ``, and
Korean words turn into fragments. ``keep_hangul`` (the ``--keep-hangul``
setting, on by default and recorded in the index) recomposes the syllables
after the tokenizer's own normalisation (an NFC step appended to it): Hangul
stays whole while lower-casing and the stripping of Latin accents, which the
vocabulary was built with, are kept. A model whose vocabulary lacks the
syllables would then read Korean as [UNK]; it keeps its own split and a
warning says so.

``HangulPolicy`` is what a tokenizer ended up with, and the notice or warning
to show when Hangul text is met. No torch or transformers import here.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenizers import Tokenizer as RustTokenizer
from tokenizers import normalizers

from .text import is_jamo_piece

SAMPLE = "배를 타고 여행을 간다"  # common syllables: a vocabulary that has Hangul has these
# States of a tokenizer towards Hangul:
WHOLE = "whole"  # the tokenizer keeps syllables whole by itself: nothing to do
KEPT = "kept"  # it would split them; keep_hangul recomposed them
NO_SYLLABLES = "jamo-no-syllables"  # it splits them, and its vocabulary has no syllables to keep
SPLIT = "jamo"  # it splits them, and keep_hangul was turned off


@dataclass(frozen=True)
class HangulPolicy:
    state: str
    model: str

    @property
    def splits(self) -> bool:
        """True when Korean text is cut into jamo pieces."""
        return self.state in (NO_SYLLABLES, SPLIT)

    def message(self) -> tuple[str, str] | None:
        """``("note" | "warning", text)`` to show once when Hangul text is met, or None."""
        if self.state == KEPT:
            return "note", (f"keeping Hangul syllables whole: the tokenizer of {self.model} strips accents, "
                            "which would split them into jamo (--no-keep-hangul restores its own split)")
        if self.state == NO_SYLLABLES:
            return "warning", (f"the vocabulary of {self.model} has no Hangul syllables, so --keep-hangul cannot "
                               "help: Korean is split into jamo (배 -> ᄇ ##ᅢ) and poorly represented; use a "
                               "Korean or multilingual model")
        if self.state == SPLIT:
            return "warning", (f"the tokenizer of {self.model} splits Hangul syllables into jamo (배 -> ᄇ ##ᅢ), so "
                               "Korean words become fragments; use --keep-hangul (the default) to keep them whole")
        return None


def splits_hangul(rust: RustTokenizer) -> bool:
    """True when the tokenizer turns the syllable 배 into jamo pieces (the NFD accent-strip trap)."""
    return any(is_jamo_piece(tok) for tok in rust.encode("배", add_special_tokens=False).tokens)


def _unknown_share(rust: RustTokenizer) -> float:
    """Share of SAMPLE's words that contain an unknown token."""
    enc = rust.encode(SAMPLE, add_special_tokens=False)
    unk = rust.model.unk_token if hasattr(rust.model, "unk_token") else "[UNK]"
    words: dict[int, bool] = {}
    for token, word in zip(enc.tokens, enc.word_ids):
        if word is not None:
            words[word] = words.get(word, False) or token == unk
    return sum(words.values()) / max(1, len(words))


def apply(rust: RustTokenizer, keep_hangul: bool, model: str) -> HangulPolicy:
    """Make ``rust`` keep Hangul syllables whole when asked and possible (in place); the outcome."""
    if not splits_hangul(rust):
        return HangulPolicy(WHOLE, model)
    if not keep_hangul:
        return HangulPolicy(SPLIT, model)
    original = rust.normalizer
    steps = [original] if original is not None else []
    rust.normalizer = normalizers.Sequence([*steps, normalizers.NFC()])
    if splits_hangul(rust) or _unknown_share(rust) > 0.5:
        rust.normalizer = original
        return HangulPolicy(NO_SYLLABLES, model)
    return HangulPolicy(KEPT, model)
