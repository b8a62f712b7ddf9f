"""The encoder: text -> L2-normalised sentence vectors from one hidden layer of a BERT model.

The default sentence vector is the bert-as-service default: the mean of the
second-to-last hidden layer (``hidden_states[-2]``) over the real tokens (the
attention mask excludes padding; [CLS] and [SEP] are real tokens and count),
L2-normalised so that inner product equals cosine.

This module owns the ``Encoder`` class: putting a loaded model together
(``loading``, ``precision``, ``bert``), tokenisation with character offsets,
length-sorted batching under a token budget, the padding policy, the Hangul
warning and the per-process cache (``Encoder.for_config``). Pooling is in
``pooling``; the slow fp32 reference that checks all this is in ``reference``.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from functools import partial
from typing import Callable, Sequence

import numpy as np
import torch

from . import bert, options
from .config import EncoderConfig
from .errors import SemsearchError
from .loading import (
    check_layer, decomposes_hangul, drop_unused_layers, load_model, model_fingerprint,
    resolve_max_length, special_tokens,
)
from .pooling import pool
from .precision import DTYPES, PROBE_TEXTS, choose_precision, probe_reduced_precision
from .text import has_hangul, normalize_text

MAX_BATCH_TEXTS = 128
GPU_BATCH_SIZE = 128
# Batches wider than 32 tokens are padded to a multiple of 16: with every width
# distinct, the math library kept per-shape state and a build's memory grew
# ~60 MB a 1,000 documents; with few widths it stays flat.
PAD_MULTIPLE = 16
PAD_FROM = 32
DESCRIBE_KEYS = ("model", "model_fingerprint", "layer", "pooling", "dimension", "max_length", "precision")


@dataclass(frozen=True)
class TokenizedText:
    """Content token ids (no special tokens) of a text and each token's character span.

    numpy arrays (``ids``: int32 ``(n,)``, ``offsets``: int64 ``(n, 2)``) keep a
    document of millions of tokens at 16 bytes a token.
    """

    ids: np.ndarray
    offsets: np.ndarray


class Encoder:
    """Sentence vectors from one hidden layer of a transformers model.

    Use :meth:`for_config` or :meth:`load` (cached per process) rather than the constructor.
    """

    def __init__(
        self, model_name: str, model_path: str, *, layer: int = options.DEFAULT_LAYER,
        pooling: str = options.DEFAULT_POOLING, max_length: int | None = None,
        batch_size: int | None = None, precision: str | None = None, device: str | None = None,
    ):
        if pooling not in options.POOLINGS:
            raise SemsearchError(f"unknown pooling {pooling!r}; choose one of {', '.join(options.POOLINGS)}")
        batch_size = options.DEFAULT_BATCH_SIZE if batch_size is None else batch_size
        if batch_size < 1:
            raise SemsearchError("batch size must be at least 1")
        tokenizer, model = load_model(model_name, model_path)
        self.model_name = model_name
        self.model_path = model_path
        self.tokenizer = tokenizer
        self.model_config = model.config
        self.num_layers = int(model.config.num_hidden_layers)
        self.dimension = int(model.config.hidden_size)
        self.layer = check_layer(layer, self.num_layers)
        self.pooling = pooling
        self.batch_size = batch_size
        self._prefix, self._suffix = special_tokens(tokenizer)
        self.n_special = len(self._prefix) + len(self._suffix)
        self.max_length = resolve_max_length(max_length, model_path, self.model_config, self.n_special)
        self.fingerprint = model_fingerprint(model, tokenizer)  # of the whole model, before dropping layers
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if self.device.startswith("cuda") and batch_size == options.DEFAULT_BATCH_SIZE:
            self.batch_size = GPU_BATCH_SIZE  # a GPU wants far larger batches than 2 CPU cores
        requested = precision or options.DEFAULT_PRECISION
        chosen = choose_precision(requested, self.device)
        probe = requested == "auto" and chosen != "fp32"  # auto: reduced only if the probe passes
        self.precision = "fp32" if probe else chosen
        self.probe_cosine: float | None = None
        self._hangul_warned = False
        self._lean = False
        self._truncated = drop_unused_layers(model, self.num_layers, self.layer_index)
        self.model = model.to(device=self.device, dtype=DTYPES[self.precision])
        if probe:
            self.precision, self.probe_cosine = probe_reduced_precision(
                self.model, partial(self.encode, warn=False), chosen)
        self._lean = bert.choose_lean(self.model_config, self._truncated, self._probe_vectors)

    # --- construction and the per-process cache -------------------------------------------
    _cache: dict[tuple, "Encoder"] = {}

    @classmethod
    def for_config(
        cls, config: EncoderConfig, *, batch_size: int | None = None, device: str | None = None,
    ) -> "Encoder":
        """The encoder for ``config`` (its fingerprint is not checked here), loaded once per
        process per request, batch size (None: ``options.DEFAULT_BATCH_SIZE``) and device."""
        batch_size = options.DEFAULT_BATCH_SIZE if batch_size is None else batch_size
        key = (config.request(), batch_size, device)
        if key not in cls._cache:
            encoder = cls(
                config.model, config.model_path, layer=config.layer, pooling=config.pooling,
                max_length=config.max_length, batch_size=batch_size, precision=config.precision,
                device=device,
            )
            cls._cache[key] = encoder
            # Asking for what it resolved to (as an index records it) gives the same encoder.
            cls._cache.setdefault((encoder.config.request(), batch_size, device), encoder)
        return cls._cache[key]

    @classmethod
    def load(
        cls, model: str | os.PathLike | None = None, *, layer: int = options.DEFAULT_LAYER,
        pooling: str = options.DEFAULT_POOLING, max_length: int | None = None,
        batch_size: int | None = options.DEFAULT_BATCH_SIZE, precision: str | None = None,
        device: str | None = None,
    ) -> "Encoder":
        """Load (once per process and configuration) an encoder for ``model`` (None: embedded)."""
        config = EncoderConfig.for_model(
            model, layer=layer, pooling=pooling, max_length=max_length,
            precision=precision or options.DEFAULT_PRECISION,
        )
        return cls.for_config(config, batch_size=batch_size, device=device)

    @classmethod
    def clear_cache(cls) -> None:
        """Forget every loaded encoder (the next request loads its model again)."""
        cls._cache.clear()

    @property
    def config(self) -> EncoderConfig:
        """The resolved configuration: fingerprint and max length set, the precision in use."""
        return EncoderConfig(
            model=self.model_name, layer=self.layer, pooling=self.pooling, max_length=self.max_length,
            precision=self.precision, fingerprint=self.fingerprint,
        )

    def describe(self) -> dict:
        """The configuration an index records."""
        info = {**self.config.as_info(), "dimension": self.dimension}
        return {key: info[key] for key in DESCRIBE_KEYS}

    @property
    def layer_index(self) -> int:
        """The pooled layer as a non-negative index into ``hidden_states`` (0 = embeddings)."""
        return self.layer % (self.num_layers + 1)

    @property
    def lean(self) -> bool:
        """True when vectors come from the lean BERT pass (``bert.lean_hidden``)."""
        return self._lean

    def _probe_vectors(self, lean: bool) -> np.ndarray:
        """The probe texts' vectors with (or without) the lean pass, which stays set as asked."""
        self._lean = lean
        return self.encode(PROBE_TEXTS, warn=False)

    # --- tokenisation -----------------------------------------------------------
    @property
    def window(self) -> int:
        """Content tokens that fit in one model input next to the special tokens."""
        return self.max_length - self.n_special

    def tokenize(self, texts: Sequence[str], chunk_chars: int = 100_000) -> list[TokenizedText]:
        """Content token ids with character offsets, no truncation (long texts in chunks)."""
        out = []
        for text in texts:
            ids: list[np.ndarray] = []
            offsets: list[np.ndarray] = []
            for base, piece in _chunks(text, chunk_chars):
                enc = self.tokenizer(
                    piece, add_special_tokens=False, return_offsets_mapping=True,
                    truncation=False, verbose=False,
                )
                ids.append(np.asarray(enc["input_ids"], dtype=np.int32))
                offsets.append(np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2) + base)
            out.append(TokenizedText(np.concatenate(ids), np.concatenate(offsets)))
        self._check_hangul(texts)
        return out

    def _check_hangul(self, texts: Sequence[str]) -> None:
        if self._hangul_warned:
            return
        if not any(has_hangul(t) for t in texts[:64]):
            return
        self._hangul_warned = True
        if decomposes_hangul(self.tokenizer):
            warnings.warn(
                f"the tokenizer of {self.model_name} splits Hangul syllables into jamo "
                "(an uncased tokenizer strips accents through NFD); Korean text will be "
                "poorly represented: use a cased multilingual or a Korean model",
                stacklevel=3,
            )

    # --- encoding ---------------------------------------------------------------
    def encode(
        self, texts: Sequence[str], progress: Callable[[int], None] | None = None, warn: bool = True,
    ) -> np.ndarray:
        """Vectors for whole texts (queries, short documents), truncated to ``max_length``.

        A text longer than the window is truncated and a warning says so; use
        the index (which splits documents into passages) to keep every word.
        """
        texts = [normalize_text(t) for t in texts]
        if warn:
            self._check_hangul(texts)
        enc = self.tokenizer(
            list(texts), add_special_tokens=False, truncation=False, verbose=False,
        )["input_ids"]
        long = [i for i, ids in enumerate(enc) if len(ids) > self.window]
        if long and warn:
            warnings.warn(
                f"{len(long)} text(s) longer than {self.window} tokens were truncated to the "
                f"model window (first: text {long[0]}, {len(enc[long[0]])} tokens)",
                stacklevel=2,
            )
        return self.encode_ids([ids[: self.window] for ids in enc], progress=progress)

    def encode_ids(
        self, token_ids: Sequence[Sequence[int]], progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Vectors for pre-tokenised content ids (each at most ``window`` long), in input order.

        Inputs are sorted by length (longest first) and padded per batch, so
        little is spent on padding; the order is restored at the end.
        """
        n = len(token_ids)
        out = np.empty((n, self.dimension), dtype=np.float32)
        if n == 0:
            return out
        order = sorted(range(n), key=lambda i: -len(token_ids[i]))
        pad_id = self.tokenizer.pad_token_id or 0
        with torch.inference_mode():
            for batch in self._batches(order, token_ids):
                seqs = [self._prefix + [int(t) for t in token_ids[i]] + self._suffix for i in batch]
                width = max(len(s) for s in seqs)
                if width > self.max_length:
                    raise ValueError(f"an input of {width} tokens exceeds max_length {self.max_length}")
                if len(seqs) > 1 and width > PAD_FROM:  # short batches and lone queries: few shapes anyway
                    width = min(self.max_length, -(-width // PAD_MULTIPLE) * PAD_MULTIPLE)
                input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
                mask = torch.zeros((len(seqs), width), dtype=torch.long)
                for row, s in enumerate(seqs):
                    input_ids[row, : len(s)] = torch.tensor(s, dtype=torch.long)
                    mask[row, : len(s)] = 1
                vectors = self._forward(input_ids.to(self.device), mask.to(self.device))
                out[batch] = vectors.cpu().numpy()
                if progress is not None:
                    progress(len(batch))
        return out

    def _batches(self, order: list[int], token_ids: Sequence[Sequence[int]]):
        """Consecutive slices of ``order`` (longest first) holding at most
        ``batch_size * max_length`` padded tokens: ``batch_size`` long texts, or
        many more short ones, so that short texts do not pay the per-call cost."""
        budget = self.batch_size * self.max_length
        i = 0
        while i < len(order):
            width = len(token_ids[order[i]]) + self.n_special  # the longest of this batch
            count = max(1, min(budget // width, MAX_BATCH_TEXTS))
            yield order[i : i + count]
            i += count

    def _forward(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self._lean:
            return pool(bert.lean_hidden(self.model, input_ids, mask).float(), mask, self.pooling)
        kwargs = {"input_ids": input_ids, "attention_mask": mask}
        if "token_type_ids" in self.tokenizer.model_input_names:
            kwargs["token_type_ids"] = torch.zeros_like(input_ids)
        if self._truncated:
            hidden = self.model(**kwargs).last_hidden_state
        else:
            hidden = self.model(**kwargs, output_hidden_states=True).hidden_states[self.layer]
        return pool(hidden.float(), mask, self.pooling)


def _chunks(text: str, size: int):
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
