"""semsearch indexing: the encoder, the SQLite metadata store, the FAISS vector index and the indexer.

    from index import Index
    idx = Index.create("faq-index")            # the embedded all-MiniLM-L6-v2, layer -2, mean pooling
    idx.add([{"id": "q1", "text": "How do I reset my password?", "metadata": {"lang": "en"}}])

Heavy modules (torch, transformers, faiss) are imported on first use, so that
``import index`` stays cheap for the CLI.
"""

from importlib import import_module
from typing import TYPE_CHECKING

from .errors import (
    ConfigMismatchError,
    IndexCorruptError,
    IndexExistsError,
    IndexLockedError,
    IndexNotFoundError,
    InputError,
    ModelLoadError,
    SemsearchError,
)

if TYPE_CHECKING:  # pragma: no cover
    from .encoder import Encoder
    from .indexer import AddResult, DeleteResult, Index, IndexInfo, RebuildResult

_LAZY = {
    "Index": "indexer", "IndexInfo": "indexer", "AddResult": "indexer",
    "DeleteResult": "indexer", "RebuildResult": "indexer", "Encoder": "encoder",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'index' has no attribute {name!r}")


__all__ = [
    "Index", "IndexInfo", "AddResult", "DeleteResult", "RebuildResult", "Encoder",
    "SemsearchError", "InputError", "IndexNotFoundError", "IndexExistsError",
    "ConfigMismatchError", "ModelLoadError", "IndexCorruptError", "IndexLockedError",
]
