"""The encoder: text -> L2-normalised sentence vectors from one hidden layer of a BERT model.

The default sentence vector is the bert-as-service default: the mean of the
second-to-last hidden layer (``hidden_states[-2]``) over the real tokens (the
attention mask excludes padding; [CLS] and [SEP] are real tokens and count),
L2-normalised so that inner product equals cosine.

This module owns the ``Encoder`` class, the same whichever backend runs the
model: tokenisation with character offsets (``tokenizer``), length-sorted
batching under a token budget, the padding policy, the Hangul warning, and
the per-process cache (``Encoder.for_config``). A runner does the arithmetic:
``torch_runner`` (PyTorch) or ``onnx_runner`` (ONNX Runtime); ``assemble``
chooses and builds one. Under ``--backend auto`` an encoder may hold two: one
for single queries (at most ``QUERY_TEXTS`` texts a call) and one for batches,
loaded on first use (``use_for_bulk``; see ``choice``).
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from .. import options
from . import assemble, words
from .config import EncoderConfig
from .hangul import HangulPolicy
from .text import has_hangul, normalize_text
from .tokenizer import TokenizedText, Tokenizer

if TYPE_CHECKING:  # pragma: no cover
    from .token_model import HiddenStates

log = logging.getLogger("semsearch")

__all__ = ["Encoder", "TokenizedText"]

MAX_BATCH_TEXTS = 128
# Batches wider than 32 tokens are padded to a multiple of 16: with every width
# distinct, the math library kept per-shape state and a build's memory grew
# ~60 MB a 1,000 documents; with few widths it stays flat.
PAD_MULTIPLE = 16
PAD_FROM = 32
# A call with at most this many texts is a query workload (see use_for_bulk): one query, or the
# service's micro-batch of concurrent queries (serve --batch-max, 32 by default).
QUERY_TEXTS = 32
FILL = 0.9  # a batch holds texts of at least this share of its longest one's tokens
DESCRIBE_KEYS = ("model", "model_fingerprint", "layer", "pooling", "dimension", "max_length", "precision", "backend",
                 "keep_hangul", "bulk_backend", "query_backend", "query_precision")


class Encoder:
    """Sentence vectors from one hidden layer of a transformers model.

    Use :meth:`for_config` or :meth:`load` (cached per process); ``assemble`` builds it.
    """

    def __init__(self, *, model_name: str, model_path: str, tokenizer: Tokenizer, runner, layer: int,
                 num_layers: int, dimension: int, pooling: str, max_length: int, batch_size: int,
                 fingerprint: str, backend_request: str = options.DEFAULT_BACKEND):
        self.model_name = model_name
        self.model_path = model_path
        self.tokenizer = tokenizer
        self.runner = runner
        self.layer = layer
        self.num_layers = num_layers
        self.dimension = dimension
        self.pooling = pooling
        self.max_length = max_length
        self.batch_size = batch_size
        self.fingerprint = fingerprint
        self.backend_request = backend_request  # what the index records: auto, onnx or torch
        self.probe_cosine: float | None = None  # reduced precision against fp32 on the probe texts
        self.export_cosine: float | None = None  # an ONNX graph against the fp32 reference
        self._hangul_warned = False
        self.keep_hangul = False  # the tokenizer as the model has it, until set_keep_hangul
        self._hidden_states = None  # the whole model, loaded for token vectors (``hidden_states``)
        self._bulk: tuple[str, str] | None = None  # (backend, precision) of another runner for batches
        self._bulk_loader: Callable[[], object] | None = None
        self._bulk_runner = None

    # --- the per-process cache --------------------------------------------------------------
    _cache: dict[tuple, "Encoder"] = {}

    @classmethod
    def for_config(cls, config: EncoderConfig, *, batch_size: int | None = None,
                   device: str | None = None) -> "Encoder":
        """The encoder for ``config``, loaded once per process per request, batch size (None:
        ``options.DEFAULT_BATCH_SIZE``) and device. A fingerprint in ``config`` is what the
        caller expects: a model that turns out to differ is refused before anything is exported."""
        batch_size = options.DEFAULT_BATCH_SIZE if batch_size is None else batch_size
        key = (config.request(), batch_size, device)
        if key not in cls._cache:
            encoder = assemble.load_encoder(cls, config.request(), batch_size, device, expect=config.fingerprint)
            encoder.set_keep_hangul(config.keep_hangul)
            cls._cache[key] = encoder
            # Asking for what it resolved to (as an index records it) gives the same encoder.
            cls._cache.setdefault((encoder.config.request(), batch_size, device), encoder)
        return cls._cache[key]

    @classmethod
    def load(cls, model: str | os.PathLike | None = None, *, layer: int = options.DEFAULT_LAYER,
             pooling: str = options.DEFAULT_POOLING, max_length: int | None = None,
             batch_size: int | None = options.DEFAULT_BATCH_SIZE, precision: str | None = None,
             device: str | None = None, backend: str | None = None,
             keep_hangul: bool | None = None) -> "Encoder":
        """Load (once per process and configuration) an encoder for ``model`` (None: embedded)."""
        config = EncoderConfig.for_model(model, layer=layer, pooling=pooling, max_length=max_length,
                                         precision=precision, backend=backend, keep_hangul=keep_hangul)
        return cls.for_config(config, batch_size=batch_size, device=device)

    @classmethod
    def clear_cache(cls) -> None:
        """Forget every loaded encoder (the next request loads its model again)."""
        cls._cache.clear()

    # --- what it is ----------------------------------------------------------------------
    def use_for_bulk(self, backend: str, precision: str, loader: Callable[[], object]) -> None:
        """Encode calls of more than ``QUERY_TEXTS`` texts with another runner, made by ``loader`` on
        first use (so that a query process never loads it); ``runner`` keeps the single queries."""
        self._bulk, self._bulk_loader, self._bulk_runner = (backend, precision), loader, None

    def runner_for(self, n_texts: int, bulk: bool | None = None):
        """The runner of a call with ``n_texts`` texts: the bulk one for batches, when there is one.
        ``bulk`` True or False chooses the bulk or the query runner whatever the count."""
        if self._bulk is None or bulk is False or (bulk is None and n_texts <= QUERY_TEXTS):
            return self.runner
        if self._bulk_runner is None:
            self._bulk_runner = self._bulk_loader()
        return self._bulk_runner

    @property
    def bulk_loaded(self) -> bool:
        """Whether a separate bulk runner was loaded (by a bulk call: ``runner_for``)."""
        return self._bulk_runner is not None

    @property
    def precision(self) -> str:
        """The precision of bulk encoding (the stored vectors); ``query_precision`` for queries."""
        if self._bulk_runner is not None:
            return self._bulk_runner.precision
        return self._bulk[1] if self._bulk else self.runner.precision

    @property
    def device(self) -> str:
        return self.runner.device

    @property
    def backend(self) -> str:
        """The backend of bulk encoding: ``onnx`` or ``torch``; ``query_backend`` for queries."""
        return self._bulk[0] if self._bulk else self.runner.backend

    @property
    def query_backend(self) -> str:
        return self.runner.backend

    @property
    def query_precision(self) -> str:
        return self.runner.precision

    @property
    def model(self):
        """The torch module (None on the ONNX backend)."""
        return self.runner.model

    @property
    def lean(self) -> bool:
        """True when vectors come from the lean BERT pass (``bert.lean_hidden``)."""
        return self.runner.lean

    @property
    def config(self) -> EncoderConfig:
        """The resolved configuration: fingerprint and max length set, the precision in use."""
        return EncoderConfig(model=self.model_name, layer=self.layer, pooling=self.pooling,
                             max_length=self.max_length, precision=self.precision,
                             fingerprint=self.fingerprint, backend=self.backend_request,
                             keep_hangul=self.keep_hangul)

    def describe(self) -> dict:
        """The configuration an index records."""
        info = {**self.config.as_info(), "dimension": self.dimension, "bulk_backend": self.backend,
                "query_backend": self.query_backend, "query_precision": self.query_precision}
        return {key: info[key] for key in DESCRIBE_KEYS}

    @property
    def layer_index(self) -> int:
        """The pooled layer as a non-negative index into ``hidden_states`` (0 = embeddings)."""
        return self.layer % (self.num_layers + 1)

    @property
    def n_special(self) -> int:
        return self.tokenizer.n_special

    @property
    def window(self) -> int:
        """Content tokens that fit in one model input next to the special tokens."""
        return self.max_length - self.n_special

    # --- tokenisation -----------------------------------------------------------
    def tokenize(self, texts: Sequence[str], chunk_chars: int = 100_000) -> list[TokenizedText]:
        """Content token ids with character offsets, no truncation (long texts in chunks)."""
        out = self.tokenizer.with_offsets(texts, chunk_chars)
        self._check_hangul(texts)
        return out

    def set_keep_hangul(self, keep_hangul: bool) -> None:
        """Keep Hangul syllables whole (when the tokenizer would split them and the vocabulary has
        them) or use the model's own tokenisation; see ``hangul``."""
        self.tokenizer = self.tokenizer.with_hangul(keep_hangul, self.model_name)
        self.keep_hangul = keep_hangul
        self._hangul_warned = False

    @property
    def hangul(self) -> HangulPolicy:
        """What the tokenizer does with Hangul syllables."""
        if self.tokenizer.hangul is None:
            self.tokenizer = self.tokenizer.with_hangul(self.keep_hangul, self.model_name)
        return self.tokenizer.hangul

    def _check_hangul(self, texts: Sequence[str]) -> None:
        """Say once, when Korean text first arrives, how its syllables are tokenised (if it matters)."""
        if self._hangul_warned or not any(has_hangul(t) for t in texts[:64]):
            return
        self._hangul_warned = True
        message = self.hangul.message()
        if message is None:
            return
        kind, text = message
        if kind == "note":
            log.info(text)
        else:
            warnings.warn(text, stacklevel=3)

    # --- token level (the tutorial's other half; see ``words``) ------------------------------
    def tokens(self, text: str) -> list["words.Token"]:
        """The tokens of ``text`` as the model sees it, with word indexes and character spans."""
        self._check_hangul([text])
        return words.text_tokens(self.tokenizer, text, self.window)

    @property
    def hidden_states(self) -> "HiddenStates":
        """The whole model in fp32 (loaded on first use) for token and word vectors."""
        if self._hidden_states is None:
            from .token_model import HiddenStates

            self._hidden_states = HiddenStates(self.model_name, self.model_path)
        return self._hidden_states

    def token_vectors(self, texts: Sequence[str], layers: Sequence[int] = words.WORD_LAYERS,
                      combine: str = "sum") -> list["words.TokenVectors"]:
        """A vector per token of each text from the chosen layers (default: the last four, summed)."""
        return words.token_vectors(self, texts, layers, combine)

    def word_vectors(self, texts: Sequence[str], layers: Sequence[int] = words.WORD_LAYERS,
                     combine: str = "sum", pieces: str = "mean") -> list["words.WordVectors"]:
        """A vector per word of each text, its word pieces merged (``mean`` or ``first``)."""
        return words.word_vectors(self, texts, layers, combine, pieces)

    # --- encoding ---------------------------------------------------------------
    def encode(self, texts: Sequence[str], progress: Callable[[int], None] | None = None,
               warn: bool = True, bulk: bool | None = None) -> np.ndarray:
        """Vectors for whole texts (queries, short documents), truncated to ``max_length``.

        ``bulk``: encode on the bulk runner (True), on the query runner (False), or by the
        number of texts (None: more than ``QUERY_TEXTS`` is bulk); see ``runner_for``.

        A text longer than the window is truncated and a warning says so; use
        the index (which splits documents into passages) to keep every word.
        """
        texts = [normalize_text(t) for t in texts]
        if warn:
            self._check_hangul(texts)
        enc = self.tokenizer.ids(texts)
        long = [i for i, ids in enumerate(enc) if len(ids) > self.window]
        if long and warn:
            warnings.warn(
                f"{len(long)} text(s) longer than {self.window} tokens were truncated to the "
                f"model window (first: text {long[0]}, {len(enc[long[0]])} tokens)",
                stacklevel=2,
            )
        return self.encode_ids([ids[: self.window] for ids in enc], progress=progress, bulk=bulk)

    def encode_ids(self, token_ids: Sequence[Sequence[int]],
                   progress: Callable[[int], None] | None = None, bulk: bool | None = None) -> np.ndarray:
        """Vectors for pre-tokenised content ids (each at most ``window`` long), in input order.

        Inputs are sorted by length (longest first) and padded per batch, so
        little is spent on padding; the order is restored at the end.
        """
        n = len(token_ids)
        out = np.empty((n, self.dimension), dtype=np.float32)
        if n == 0:
            return out
        order = sorted(range(n), key=lambda i: -len(token_ids[i]))
        runner = self.runner_for(n, bulk)
        prefix, suffix = self.tokenizer.prefix, self.tokenizer.suffix
        for batch in self.batches(order, token_ids, runner.batch_texts):
            seqs = [prefix + [int(t) for t in token_ids[i]] + suffix for i in batch]
            width = max(len(s) for s in seqs)
            if width > self.max_length:
                raise ValueError(f"an input of {width} tokens exceeds max_length {self.max_length}")
            if len(seqs) > 1 and width > PAD_FROM:  # short batches and lone queries: few shapes anyway
                width = min(self.max_length, -(-width // PAD_MULTIPLE) * PAD_MULTIPLE)
            input_ids = np.full((len(seqs), width), self.tokenizer.pad_id, dtype=np.int64)
            mask = np.zeros((len(seqs), width), dtype=np.int64)
            for row, s in enumerate(seqs):
                input_ids[row, : len(s)] = s
                mask[row, : len(s)] = 1
            out[batch] = runner.run(input_ids, mask)
            if progress is not None:
                progress(len(batch))
        return out

    def long_texts_per_call(self, cap: int | None) -> int:
        """Texts of ``max_length`` tokens in one model call: the batch size, or a runner's lower
        ``cap`` (``OnnxRunner.batch_texts``; None: no cap)."""
        return min(self.batch_size, cap or self.batch_size)

    def batches(self, order: list[int], token_ids: Sequence[Sequence[int]], cap: int | None = None):
        """Consecutive slices of ``order`` (longest first) holding at most
        ``batch_size * max_length`` padded tokens: ``batch_size`` long texts, or
        many more short ones, so that short texts do not pay the per-call cost;
        ``cap``: the runner's own limit on long texts a call, when it is lower
        (``OnnxRunner.batch_texts``).
        A batch also ends before a text shorter than ``FILL`` of its width: padding
        costs as much as real tokens (32 queries in one call took 1.5x as long as
        one by one, and 0.85x with this bound)."""
        budget = self.long_texts_per_call(cap) * self.max_length
        i = 0
        while i < len(order):
            width = len(token_ids[order[i]]) + self.n_special  # the longest of this batch
            end = min(len(order), i + max(1, min(budget // width, MAX_BATCH_TEXTS)))
            j = i + 1
            while j < end and len(token_ids[order[j]]) + self.n_special >= FILL * width:
                j += 1
            yield order[i:j]
            i = j
