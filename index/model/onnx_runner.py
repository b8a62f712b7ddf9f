"""The ONNX Runtime inference backend: padded token ids in, pooled sentence vectors out.

An ``OnnxRunner`` runs a graph exported by ``onnx_export`` (the model up to
the pooled layer, its attention fused) on the CPU and pools in
numpy, so a query answered this way never imports torch or transformers.
"""

from __future__ import annotations

import os
import threading

import numpy as np

from .pooling import pool_numpy


def cpu_threads() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


# Long texts per ONNX Runtime call at most, whatever the encoder's batch size: its layer norms and
# GELU read and write whole activations, and a call of 16 texts of 256 tokens outgrows the CPU's
# caches (SciFact abstracts on an Intel Xeon family 6 model 167, 2 threads: int8 73 -> 90 docs/s and
# fp32 40 -> 43 from 16 to 4 texts a call; STSb +6-7%; still the best of 4, 8 and 16 with the graphs
# of export version 2; PyTorch gains nothing, so its runner keeps the batch size: docs/speed.md).
BATCH_TEXTS = 4
# Graph optimisations ONNX Runtime is told to skip when it loads a graph: fusing a residual Add and
# the LayerNormalization after it into SkipLayerNormalization, which runs slower than the two
# (onnx_export.FUSIONS_LEFT_OUT says how much slower; the exported graph leaves it out as well).
LEFT_OUT_AT_LOAD = ["SkipLayerNormFusion"]


def new_session(graph: bytes | str, threads: int, save_optimized: str | None = None):
    """An ONNX Runtime CPU session of ``graph`` with ``threads`` threads for one operator at a time;
    ``save_optimized``: a path to write the graph as ONNX Runtime optimised it (tests read it)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    if save_optimized:
        options.optimized_model_filepath = save_optimized
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"],
                                disabled_optimizers=LEFT_OUT_AT_LOAD)


class OnnxRunner:
    backend = "onnx"
    lean = False
    model = None  # no torch module
    batch_texts = BATCH_TEXTS  # long texts per call at most (None: the encoder's batch size)

    def __init__(self, graph: bytes | str, pooling: str, precision: str, threads: int | None = None):
        """``graph``: the ONNX model, as bytes or the path of its file. Its session is made on the first
        run, so that a bulk job whose batches run on another runner never pays for it."""
        self.graph, self.threads = graph, threads
        self._session = None
        self._making = threading.Lock()
        self.pooling = pooling
        self.precision = precision
        self.device = "cpu"

    @property
    def started(self) -> bool:
        """Whether the session was made (by a first run)."""
        return self._session is not None

    @property
    def session(self):
        if self._session is None:
            with self._making:
                if self._session is None:
                    self._session = self._make_session()
        return self._session

    def _make_session(self):
        session = new_session(self.graph, self.threads or cpu_threads())
        self.inputs = {i.name for i in session.get_inputs()}
        self.graph = None  # ONNX Runtime holds its own copy
        return session

    def run(self, input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Unit vectors ``(batch, dim)`` of padded ``(batch, tokens)`` int64 ids and attention mask."""
        session = self.session
        feed = {"input_ids": input_ids, "attention_mask": mask}
        hidden = session.run(None, {k: v for k, v in feed.items() if k in self.inputs})[0]
        return pool_numpy(hidden, mask, self.pooling)
