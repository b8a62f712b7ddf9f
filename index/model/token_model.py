"""Every hidden layer of a text, for token and word vectors (the tutorial's ``output_hidden_states``).

The sentence-vector path keeps only the layers up to the pooled one (or an
exported graph of them), so token-level work loads the whole transformers
model once more, in fp32 on the CPU: a ``HiddenStates``. It computes the
layers asked for and none above the deepest of them, with the lean BERT pass
(``bert.lean_hidden_states``) where that reproduces transformers' forward on
a probe text, else with transformers' forward and ``output_hidden_states``.
Texts run one at a time: no padding, so a token's vector never depends on
the other texts.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch

from . import bert, loading

TOLERANCE = 1e-4  # largest absolute difference allowed between the lean pass and transformers' forward

log = logging.getLogger(__name__)


class HiddenStates:
    """The whole model of ``model_path`` in fp32, for ``run``."""

    def __init__(self, model_name: str, model_path: str):
        hf_tokenizer, model = loading.load_model(model_name, model_path)
        self.model = model.float()
        self.num_layers = int(model.config.num_hidden_layers)
        self.dimension = int(model.config.hidden_size)
        self.token_types = "token_type_ids" in hf_tokenizer.model_input_names
        self.lean = False
        if bert.eligible(model.config, truncated=True):
            self.lean = self._lean_agrees(hf_tokenizer("The bank raised its rates.")["input_ids"])

    def _lean_agrees(self, ids: list[int]) -> bool:
        try:
            lean = self._run(ids, self.num_layers, lean=True)
        except Exception as exc:  # an unexpected module layout: keep the library's forward
            log.info("lean forward unavailable for token vectors: %s", exc)
            return False
        return float(np.abs(lean - self._run(ids, self.num_layers, lean=False)).max()) <= TOLERANCE

    def run(self, ids: Sequence[int], upto: int) -> np.ndarray:
        """float32 ``(upto + 1, tokens, dim)``: the embeddings and layers 1..``upto`` of one input
        (special tokens included, as the model sees it)."""
        if not 0 <= upto <= self.num_layers:
            raise ValueError(f"upto must be within 0..{self.num_layers}")
        return self._run(ids, upto, self.lean)

    def _run(self, ids: Sequence[int], upto: int, lean: bool) -> np.ndarray:
        with torch.inference_mode():
            input_ids = torch.tensor([list(ids)], dtype=torch.long)
            mask = torch.ones_like(input_ids)
            if lean:
                states = bert.lean_hidden_states(self.model, input_ids, mask, upto)
            else:
                kwargs = {"input_ids": input_ids, "attention_mask": mask}
                if self.token_types:
                    kwargs["token_type_ids"] = torch.zeros_like(input_ids)
                states = self.model(**kwargs, output_hidden_states=True).hidden_states[: upto + 1]
            return torch.stack([s[0] for s in states]).float().numpy()
