"""Choices and defaults shared by the CLI and the library.

This module imports neither torch nor faiss, so ``semsearch --help`` and
option parsing stay fast. The library reads its defaults from here at call
time (``options.DEFAULT_PRECISION``, ``options.COMMIT_EVERY``), so a test or
a caller can change one in a single place.

Vector backends register here: ``VECTOR_BACKENDS`` maps an ``--index-type``
name to the class that implements it (imported only when used). A new backend
is one file in ``index/ann/`` plus one line in this mapping.
"""

from __future__ import annotations

# --- the model and its sentence vectors -------------------------------------------------
EMBEDDED_MODEL = "embedded:all-MiniLM-L6-v2"  # recorded name of the model shipped with semsearch
DEFAULT_LAYER = -2  # hidden_states[-2]: the bert-as-service default
POOLINGS = ("mean", "max", "cls")
DEFAULT_POOLING = "mean"
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
DEFAULT_PRECISION = "auto"  # bf16/fp16 where the hardware has it and the accuracy probe passes; int8 is opt-in
BACKENDS = ("auto", "onnx", "torch")  # inference: ONNX Runtime, PyTorch, or the faster one on this machine
DEFAULT_BACKEND = "auto"
DEFAULT_MAX_LENGTH = 256  # tokens per model input when the model folder does not say
DEFAULT_BATCH_SIZE = 16  # long texts per model call on the CPU; short texts share the token budget

# --- the index ---------------------------------------------------------------------------
VECTOR_BACKENDS = {  # --index-type name -> "module:Class" under index/ann/
    "flat": "index.ann.flat:FlatIndex",
    "hnsw": "index.ann.hnsw:HNSWIndex",
    "ivf": "index.ann.ivf:IVFIndex",
    "ivfpq": "index.ann.ivfpq:IVFPQIndex",
    "ivf-disk": "index.ann.ivf_disk:IVFDiskIndex",
}
AUTO_INDEX_TYPE = "auto"  # chosen by size: see index.vectors.resolve_type
INDEX_TYPES = (*VECTOR_BACKENDS, AUTO_INDEX_TYPE)
DEFAULT_INDEX_TYPE = "flat"
DEFAULT_PASSAGE_OVERLAP = 32  # tokens shared by consecutive passages; at most a quarter of the window
COMMIT_EVERY = 1000  # documents per committed transaction while adding
SHARD_MANIFEST = "semsearch-shards.json"  # marks a sharded index's folder (index.distributed.shards)
ENGINES = ("local", "ray")  # who encodes an add: this process, or a Ray actor pool (index.distributed.ray_engine)
DEFAULT_TARGET_RECALL = 0.95  # approximate indexes tune their search settings to reach this recall@10
WHITENINGS = ("auto", "on", "off")  # --whitening: as measured for the model and layer, always, never
DEFAULT_WHITENING = "auto"

# --- input ---------------------------------------------------------------------------------
FORMATS = ("jsonl", "csv", "tsv", "text", "lines")

# --- token and word vectors -----------------------------------------------------------------
WORD_LAYERS = (-4, -3, -2, -1)  # the tutorial's word vectors: the last four layers...
COMBINES = ("sum", "mean", "concat")  # ...summed (or averaged, or concatenated)
PIECES = ("mean", "first")  # a word's vector from its word pieces
