"""Tokens, token vectors and word vectors: the tutorial's token-level half.

``text_tokens`` lists a text's WordPiece tokens as the model sees them (its
special tokens marked) with their ids, the word each belongs to (the
tokenizer's pre-tokenised words: whitespace and punctuation split them) and
their character spans in the text as given, before any normalisation.
``token_vectors`` gives each token one vector made of chosen hidden layers
(summed, averaged or concatenated; by default the sum of the last four, as in
the tutorial); ``word_vectors`` merges a word's pieces (their mean, or the
first piece), so a word outside the vocabulary still gets one vector.

The same tokenizer as the sentence vectors (the encoder's, Hangul policy
included), and the same truncation to the model window.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, Sequence

import numpy as np

from ..errors import SemsearchError
from ..options import COMBINES, PIECES, WORD_LAYERS
from .text import nfc_with_spans

if TYPE_CHECKING:  # pragma: no cover
    from .token_model import HiddenStates
    from .tokenizer import Tokenizer


@dataclass(frozen=True)
class Token:
    """One token: ``word`` is the index of its word (None for a special token); ``start``/``end``
    its character span in the text as given (None for a special token)."""

    token: str
    id: int
    word: int | None
    start: int | None
    end: int | None
    special: bool

    def as_dict(self) -> dict[str, Any]:
        return {"token": self.token, "id": self.id, "word": self.word, "start": self.start, "end": self.end,
                "special": self.special}


@dataclass(frozen=True)
class Word:
    """A word of a text: its characters, span, and the tokens (indexes into the text's tokens) it
    was cut into."""

    index: int
    text: str
    start: int
    end: int
    pieces: tuple[str, ...]
    token_indexes: tuple[int, ...]


@dataclass(frozen=True)
class TokenVectors:
    """Every token of ``text`` (special ones included) and its vector, row for row."""

    text: str
    tokens: list[Token]
    vectors: np.ndarray  # float32 (tokens, dim), or (tokens, dim * layers) for concat
    layers: tuple[int, ...]
    combine: str


@dataclass(frozen=True)
class WordVectors:
    """Every word of ``text`` and its vector, row for row."""

    text: str
    words: list[Word]
    vectors: np.ndarray
    layers: tuple[int, ...]
    combine: str
    pieces: str


def text_tokens(tokenizer: "Tokenizer", text: str, window: int | None = None) -> list[Token]:
    """The tokens of ``text`` as the model sees it: special tokens around the content, content cut
    to ``window`` tokens (a warning says so), spans in ``text`` itself."""
    nfc, starts, ends = nfc_with_spans(text)
    enc = tokenizer.rust.encode(nfc, add_special_tokens=False)
    n = len(enc.ids)
    if window is not None and n > window:
        warnings.warn(f"text of {n} tokens cut to the model window of {window}: {text[:40]!r}...", stacklevel=3)
        n = window

    def special(ids: list[int]) -> list[Token]:
        return [Token(tokenizer.rust.id_to_token(i) or "", i, None, None, None, True) for i in ids]

    content = []
    for i in range(n):
        a, b = enc.offsets[i]
        start = starts[a] if a < len(starts) else len(text)
        end = ends[b - 1] if 0 < b <= len(ends) else start
        is_special = bool(enc.special_tokens_mask[i])
        content.append(Token(enc.tokens[i], enc.ids[i], None if is_special else enc.word_ids[i], start,
                             max(start, end), is_special))
    return special(tokenizer.prefix) + content + special(tokenizer.suffix)


def words_of(text: str, tokens: Sequence[Token]) -> list[Word]:
    """The words of a text from its tokens (a word's pieces are the tokens sharing its word index)."""
    groups: dict[int, list[int]] = {}
    for i, tok in enumerate(tokens):
        if tok.word is not None:
            groups.setdefault(tok.word, []).append(i)
    words = []
    for n, (_, rows) in enumerate(sorted(groups.items())):
        start, end = tokens[rows[0]].start, tokens[rows[-1]].end
        words.append(Word(n, text[start:end], start, end, tuple(tokens[r].token for r in rows), tuple(rows)))
    return words


def check_layers(layers: Sequence[int], num_layers: int) -> list[int]:
    """``layers`` (negative counts from the top; 0 = the embeddings) as indexes into
    ``hidden_states``; a clear error for an empty list or a layer out of range."""
    if not layers:
        raise SemsearchError("give at least one layer")
    out = []
    for layer in layers:
        if not -(num_layers + 1) <= layer <= num_layers:
            raise SemsearchError(
                f"layer {layer} is out of range: the model has {num_layers} layers, so choose from "
                f"{-(num_layers + 1)} to {num_layers} (0 is the embeddings, -1 the last layer)")
        out.append(layer % (num_layers + 1))
    return out


def combine_layers(states: np.ndarray, layer_indexes: Sequence[int], combine: str) -> np.ndarray:
    """Token vectors from ``states`` (layers, tokens, dim): the chosen layers summed, averaged or
    concatenated (in the order given)."""
    chosen = [states[i] for i in layer_indexes]
    if combine == "sum":
        return np.sum(chosen, axis=0).astype(np.float32)
    if combine == "mean":
        return np.mean(chosen, axis=0).astype(np.float32)
    if combine == "concat":
        return np.concatenate(chosen, axis=1).astype(np.float32)
    raise SemsearchError(f"unknown combine {combine!r}; choose one of {', '.join(COMBINES)}")


class TokenEncoder(Protocol):
    """What the token-level functions use of an encoder (``encoder.Encoder`` is one): its tokens
    of a text and the full model's hidden states."""

    @property
    def hidden_states(self) -> "HiddenStates": ...

    def tokens(self, text: str) -> list[Token]: ...


def token_vectors(encoder: "TokenEncoder", texts: Sequence[str], layers: Sequence[int] = WORD_LAYERS,
                  combine: str = "sum") -> list[TokenVectors]:
    """One ``TokenVectors`` per text; only the layers up to the deepest asked for are computed."""
    if combine not in COMBINES:
        raise SemsearchError(f"unknown combine {combine!r}; choose one of {', '.join(COMBINES)}")
    _check_texts(texts)
    model = encoder.hidden_states
    indexes = check_layers(layers, model.num_layers)
    out = []
    for text in texts:
        tokens = encoder.tokens(text)
        states = model.run([t.id for t in tokens], max(indexes))
        out.append(TokenVectors(text, tokens, combine_layers(states, indexes, combine), tuple(layers), combine))
    return out


def word_vectors(encoder: "TokenEncoder", texts: Sequence[str], layers: Sequence[int] = WORD_LAYERS,
                 combine: str = "sum", pieces: str = "mean") -> list[WordVectors]:
    """One ``WordVectors`` per text: each word's pieces merged (``mean`` or ``first``)."""
    if pieces not in PIECES:
        raise SemsearchError(f"unknown pieces {pieces!r}; choose one of {', '.join(PIECES)}")
    out = []
    for tv in token_vectors(encoder, texts, layers, combine):
        words = words_of(tv.text, tv.tokens)
        rows = [tv.vectors[list(w.token_indexes)].mean(axis=0) if pieces == "mean" else tv.vectors[w.token_indexes[0]]
                for w in words]
        vectors = np.stack(rows).astype(np.float32) if rows else np.empty((0, tv.vectors.shape[1]), np.float32)
        out.append(WordVectors(tv.text, words, vectors, tv.layers, combine, pieces))
    return out


def _check_texts(texts: Sequence[str]) -> None:
    if not texts:
        raise SemsearchError("give at least one text")
    for i, text in enumerate(texts, 1):
        if not text or not text.strip():
            raise SemsearchError(f"text {i} is empty")
