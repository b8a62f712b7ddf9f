"""Tokenisation on the ``tokenizers`` library, shared by every inference backend.

A ``Tokenizer`` wraps the Rust tokenizer behind a transformers "fast"
tokenizer: built from the transformers tokenizer when the model is loaded
with transformers, or read back from the ``tokenizer.json`` that semsearch
saved next to an exported graph, so a query answered by ONNX Runtime never
imports transformers. Padding and truncation are switched off (a model
folder's ``tokenizer.json`` may fix both at 128); semsearch batches and
windows the ids itself.

It gives content ids (no special tokens) with each token's character span,
the special tokens the model puts around a text, the padding id, and whether
the tokenizer splits Hangul syllables into jamo (``with_hangul`` makes a copy
that keeps them whole, see ``hangul``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from tokenizers import Tokenizer as RustTokenizer

from ..errors import ModelLoadError
from . import hangul
from .hangul import HangulPolicy

CHUNK_CHARS = 100_000  # a long text is tokenised in pieces of about this many characters


@dataclass(frozen=True)
class TokenizedText:
    """Content token ids (no special tokens) of a text and each token's character span.

    numpy arrays (``ids``: int32 ``(n,)``, ``offsets``: int64 ``(n, 2)``) keep a
    document of millions of tokens at 16 bytes a token.
    """

    ids: np.ndarray
    offsets: np.ndarray


class Tokenizer:
    """Content ids and offsets, special tokens and padding id of one model's tokenizer."""

    def __init__(self, rust: RustTokenizer, pad_id: int | None = None):
        self.rust = rust
        self.hangul: HangulPolicy | None = None  # set by with_hangul
        padding = rust.padding
        self.pad_id = int(pad_id if pad_id is not None else (padding or {}).get("pad_id", 0) or 0)
        rust.no_padding()
        rust.no_truncation()
        self.prefix, self.suffix = self._special_tokens()

    @classmethod
    def from_transformers(cls, tokenizer) -> "Tokenizer":
        """The tokenizer a transformers fast tokenizer runs (a copy: the original is left as it is)."""
        if not getattr(tokenizer, "is_fast", False):
            raise ModelLoadError("semsearch needs a fast tokenizer (for passage offsets)")
        return cls(RustTokenizer.from_str(tokenizer.backend_tokenizer.to_str()), tokenizer.pad_token_id or 0)

    @classmethod
    def from_file(cls, path: Path, pad_id: int | None = None) -> "Tokenizer":
        return cls(RustTokenizer.from_file(str(path)), pad_id)

    def with_hangul(self, keep_hangul: bool, model: str) -> "Tokenizer":
        """A copy that keeps Hangul syllables whole when asked and possible (``hangul.apply``);
        its ``hangul`` says what happened. The original is left as it is."""
        copy = Tokenizer(RustTokenizer.from_str(self.rust.to_str()), self.pad_id)
        copy.hangul = hangul.apply(copy.rust, keep_hangul, model)
        return copy

    def save(self, path: Path) -> None:
        Path(path).write_text(self.rust.to_str(), encoding="utf-8")

    @property
    def n_special(self) -> int:
        return len(self.prefix) + len(self.suffix)

    def _special_tokens(self) -> tuple[list[int], list[int]]:
        """The ids the tokenizer puts before and after a single text (for BERT: [CLS] and [SEP])."""
        content = self.rust.encode("x", add_special_tokens=False).ids
        full = self.rust.encode("x", add_special_tokens=True).ids
        for i in range(len(full) - len(content) + 1):
            if full[i : i + len(content)] == content:
                return list(full[:i]), list(full[i + len(content) :])
        raise ModelLoadError("cannot work out the tokenizer's special tokens")

    def tokenize(self, text: str) -> list[str]:
        """The content tokens of ``text`` as strings (as transformers' ``tokenize``)."""
        return self.rust.encode(text, add_special_tokens=False).tokens

    def ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Content ids of each text, untruncated."""
        return [e.ids for e in self.rust.encode_batch(list(texts), add_special_tokens=False)]

    def with_offsets(self, texts: Sequence[str], chunk_chars: int = CHUNK_CHARS) -> list[TokenizedText]:
        """Content token ids with character offsets, no truncation (long texts in chunks)."""
        out = []
        for text in texts:
            ids: list[np.ndarray] = []
            offsets: list[np.ndarray] = []
            for base, piece in _chunks(text, chunk_chars):
                enc = self.rust.encode(piece, add_special_tokens=False)
                ids.append(np.asarray(enc.ids, dtype=np.int32))
                offsets.append(np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2) + base)
            out.append(TokenizedText(np.concatenate(ids), np.concatenate(offsets)))
        return out

    def describe(self) -> dict:
        """What a cache needs to rebuild this tokenizer's settings."""
        return {"pad_id": self.pad_id, "prefix": self.prefix, "suffix": self.suffix}

    def vocabulary(self) -> dict[str, int]:
        return self.rust.get_vocab(with_added_tokens=True)


def decomposes_hangul(tokenizer: Tokenizer) -> bool:
    """True when the tokenizer turns the syllable 배 into jamo pieces (the NFD accent-strip trap)."""
    return hangul.splits_hangul(tokenizer.rust)


def _chunks(text: str, size: int) -> Iterator[tuple[int, str]]:
    """Split a long text at whitespace into pieces of about ``size`` characters, with offsets."""
    start = 0
    n = len(text)
    while start < n:
        end = min(n, start + size)
        if end < n:
            cut = text.rfind(" ", start + size // 2, end)
            if cut == -1:
                cut = max(text.rfind("\n", start + size // 2, end), -1)
            if cut != -1:
                end = cut + 1
        yield start, text[start:end]
        start = end
    if n == 0:
        yield 0, ""
