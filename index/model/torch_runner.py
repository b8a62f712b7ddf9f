"""The PyTorch inference backend: padded token ids in, pooled sentence vectors out.

A ``TorchRunner`` holds a transformers model with the layers above the pooled
one dropped (``loading.drop_unused_layers``), in the precision chosen for it,
on its device; it runs either transformers' own forward or, where it was
shown to give the same vectors, the lean BERT pass (``bert.lean_hidden``).
``probe_reduced_precision`` decides whether bf16/fp16 may replace fp32.
"""

from __future__ import annotations

import logging
from typing import Callable, Sequence

import numpy as np
import torch

from . import bert
from . import precision as policy
from .loading import drop_unused_layers
from .memory import keep_freed_memory
from .pooling import pool

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

log = logging.getLogger(__name__)


class TorchRunner:
    backend = "torch"
    batch_texts = None  # long texts per call: the encoder's batch size (no cap of its own)

    def __init__(self, model, *, num_layers: int, layer: int, layer_index: int, pooling: str,
                 device: str, precision: str, token_types: bool):
        self.layer = layer
        self.pooling = pooling
        self.device = device
        self.token_types = token_types  # the model takes token_type_ids
        self.truncated = drop_unused_layers(model, num_layers, layer_index)
        self.model = model.to(device=device, dtype=DTYPES[precision])
        self.precision = precision
        self.lean = False  # switched on by the encoder's loader after a probe
        if device == "cpu":
            keep_freed_memory()  # activations reuse freed heap instead of fresh pages (index.model.memory)

    def set_precision(self, precision: str) -> None:
        self.model.to(dtype=DTYPES[precision])
        self.precision = precision

    def run(self, input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Unit vectors ``(batch, dim)`` of padded ``(batch, tokens)`` int64 ids and attention mask."""
        with torch.inference_mode():
            ids = torch.from_numpy(input_ids).to(self.device)
            attend = torch.from_numpy(mask).to(self.device)
            if self.lean:
                hidden = bert.lean_hidden(self.model, ids, attend)
            else:
                kwargs = {"input_ids": ids, "attention_mask": attend}
                if self.token_types:
                    kwargs["token_type_ids"] = torch.zeros_like(ids)
                if self.truncated:
                    hidden = self.model(**kwargs).last_hidden_state
                else:
                    hidden = self.model(**kwargs, output_hidden_states=True).hidden_states[self.layer]
            return pool(hidden.float(), attend, self.pooling).cpu().numpy()


def probe_reduced_precision(runner: TorchRunner, encode: Callable[[Sequence[str]], np.ndarray],
                            precision: str, reference: np.ndarray | None = None) -> tuple[str, float]:
    """Switch an fp32 ``runner`` to ``precision`` if that reproduces its fp32 vectors.

    ``encode`` turns texts into vectors with the runner as it is at the time of
    the call (``reference``: its fp32 vectors of PROBE_TEXTS, when already computed). Returns ``(precision in use, lowest cosine to fp32 on PROBE_TEXTS)``;
    the runner goes back to fp32 when that cosine is below ``MIN_PROBE_COSINE``.
    """
    if reference is None:
        reference = encode(policy.PROBE_TEXTS)
    runner.set_precision(precision)
    reduced = encode(policy.PROBE_TEXTS)
    cosine = float((reference * reduced).sum(axis=1).min())
    if cosine < policy.MIN_PROBE_COSINE:
        log.info("keeping fp32: %s vectors reached cosine %.5f only", precision, cosine)
        runner.set_precision("fp32")
        return "fp32", cosine
    return precision, cosine
