"""The small records the index API returns: a passage, what a write did, what an index is.

No heavy imports: the CLI, the store and the searcher all share them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


def recorded_runs(cfg: dict[str, Any]) -> tuple[str, str]:
    """``(bulk, query)``: the backend and precision an index recorded for each workload."""
    missing = "not recorded (written before it was)"
    bulk = f"{cfg['bulk_backend']} {cfg.get('precision')}" if cfg.get("bulk_backend") else missing
    query = (f"{cfg['query_backend']} {cfg['query_precision']}"
             if cfg.get("query_backend") and cfg.get("query_precision") else missing)
    return bulk, query


@dataclass
class Passage:
    """A window of a document: its position among the document's passages, its character
    span in the document text, and its text (a search hit names the passage that matched)."""

    order: int
    start: int
    end: int
    text: str


@dataclass
class AddResult:
    """What ``Index.add`` did; ``repeated`` ids appeared more than once in the input (the last won)."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    metadata_updated: int = 0
    skipped_empty: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    passages: int = 0

    @property
    def documents(self) -> int:
        return self.added + self.updated + self.unchanged + self.metadata_updated


@dataclass
class DeleteResult:
    deleted: list[str]
    missing: list[str]


@dataclass
class RebuildResult:
    documents: int
    passages: int
    seconds: float


@dataclass
class IndexInfo:
    """What ``semsearch index info`` shows."""

    path: str
    model: str
    model_fingerprint: str
    layer: int
    pooling: str
    dimension: int
    max_length: int
    passage_tokens: int
    passage_overlap: int
    precision: str
    backend: str  # as asked: auto (the faster on each machine), onnx or torch
    keep_hangul: bool  # Hangul syllables kept whole where the tokenizer would cut them into jamo
    target_recall: float  # approximate indexes tune their search settings to this recall@10
    search_tuning: dict | None  # the settings chosen and the recall measured (index.tuning.Tuning)
    index_type: str
    vector_index: str  # what the FAISS index is now (auto and untrained IVF resolve by size)
    schema_version: int
    generation: int
    documents: int
    passages: int
    vectors: int
    complete: bool
    created_at: str
    updated_at: str
    hybrid: bool = False  # keeps a BM25 index of its passages; searches are hybrid by default
    bulk: str = ""  # backend and precision that encoded the stored passages, e.g. "torch bf16"
    query: str = ""  # backend and precision of single queries, e.g. "onnx fp32"
    whitening: dict | None = None  # mode, dims and the fit (decision, transform summary; index.storage.whitened)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
