"""Exporting a BERT encoder to an ONNX graph for ONNX Runtime, and quantising it to int8.

``export`` writes the model up to the pooled layer (the layers above it are
already dropped) as a graph with dynamic batch and sequence axes, its
attention written in the classic BERT pattern so that ONNX Runtime's
transformer optimizer fuses it (``optimize``: attention; the layer norms
stay ``LayerNormalization`` after their residual ``Add`` and GELU stays
``Gelu``, see ``FUSIONS_LEFT_OUT``). ``quantize_int8`` makes the
opt-in int8 graph: weights quantised per output channel, activations
dynamically per tensor, optionally keeping some MatMuls in fp32.
Only plain BERT models (``model_files.ModelFacts.plain_bert``) are exported;
anything else stays on the torch backend.
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path

import torch

OPSET = 17
# Fusions of ONNX Runtime's transformer optimizer that the graph is built without. Its fused
# SkipLayerNormalization (residual add + layer norm, also the gate of the embeddings' fusion) ran
# 2-3 times as long per element as LayerNormalization after an Add on this CPU's ONNX Runtime
# (one-off profile of the int8 graph, 1,024-token calls: 22% of the time against 8%), and BiasGelu
# kept the int8 graph's FFN bias out of its quantised matrix product. Without them, whole `semsearch
# embed` processes of 1,000 SciFact abstracts took 17% less time in int8 and 10% less in fp32,
# and one short query took no longer (Intel Xeon family 6 model 167, 2 threads; docs/speed.md).
FUSIONS_LEFT_OUT = ("enable_skip_layer_norm", "enable_bias_gelu")
# ONNX Runtime would make SkipLayerNormalization again when it loads the graph: the runner's session
# leaves that out too (onnx_runner.LEFT_OUT_AT_LOAD).


class ExportedBert(torch.nn.Module):
    """The kept layers of a transformers BertModel, written for export."""

    def __init__(self, model):
        super().__init__()
        self.embeddings = model.embeddings
        self.layers = model.encoder.layer

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        e = self.embeddings
        positions = torch.arange(input_ids.shape[1], dtype=torch.long, device=input_ids.device).unsqueeze(0)
        hidden = e.word_embeddings(input_ids) + e.position_embeddings(positions) \
            + e.token_type_embeddings(torch.zeros_like(input_ids))
        hidden = e.LayerNorm(hidden)
        bias = (1.0 - attention_mask[:, None, None, :].to(hidden.dtype)) * -10000.0
        for layer in self.layers:
            att = layer.attention.self
            heads, size = att.num_attention_heads, att.attention_head_size
            batch = hidden.shape[0]

            def split(x: torch.Tensor) -> torch.Tensor:
                return x.view(batch, -1, heads, size).permute(0, 2, 1, 3)

            q, k, v = split(att.query(hidden)), split(att.key(hidden)), split(att.value(hidden))
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(size) + bias
            ctx = torch.matmul(torch.softmax(scores, dim=-1), v).permute(0, 2, 1, 3).reshape(batch, -1, heads * size)
            out = layer.attention.output
            hidden = out.LayerNorm(out.dense(ctx) + hidden)
            inner = layer.intermediate.intermediate_act_fn(layer.intermediate.dense(hidden))
            hidden = layer.output.LayerNorm(layer.output.dense(inner) + hidden)
        return hidden


def export(model, path: Path) -> None:
    """Write the (already truncated, fp32, CPU) BertModel ``model`` as an ONNX graph at ``path``."""
    module = ExportedBert(model).eval()
    ids = torch.tensor([[101, 2054, 2003, 1996, 3007, 102], [101, 2054, 2003, 102, 0, 0]], dtype=torch.long)
    ids = ids.clamp(max=model.config.vocab_size - 1)
    mask = (ids != 0).long()
    axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
            "hidden": {0: "batch", 1: "tokens"}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (ids, mask), str(path), input_names=["input_ids", "attention_mask"],
                          output_names=["hidden"], dynamic_axes=axes, opset_version=OPSET, dynamo=False)


def optimize(source: Path, target: Path, heads: int, hidden_size: int) -> dict:
    """Fuse the graph's BERT patterns for ONNX Runtime; returns the fused-operator counts."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    fusions = FusionOptions("bert")
    for name in FUSIONS_LEFT_OUT:
        setattr(fusions, name, False)
    optimized = optimize_model(str(source), model_type="bert", num_heads=heads, hidden_size=hidden_size,
                               optimization_options=fusions)
    optimized.save_model_to_file(str(target))
    return {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}


def matmuls_after(path: Path, op_type: str) -> list[str]:
    """Names of the MatMul nodes that read the output of an ``op_type`` node (e.g. the FFN output
    projections read Gelu), to keep them in fp32 when int8 needs it."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    produced = {out for node in graph.node if node.op_type == op_type for out in node.output}
    return [node.name for node in graph.node if node.op_type == "MatMul" and node.input[0] in produced]


def quantize_int8(source: Path, target: Path, keep_fp32: list[str]) -> None:
    """Dynamic int8 quantisation: weights per output channel, the ``keep_fp32`` nodes left as they are."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.disable(logging.WARNING)  # its advice to pre-process goes to the root logger
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True,
                             nodes_to_exclude=keep_fp32,
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        logging.disable(logging.NOTSET)
