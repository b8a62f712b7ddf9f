"""semsearch indexing: the encoder, the SQLite metadata store, the FAISS vector index and the indexer.

Where things live: ``indexer.Index`` (the public face), ``writer`` (add, delete,
rebuild under the lock), ``snapshot`` (what a reader sees of one generation),
``generations`` (FAISS file <-> SQLite generation), ``folder`` (create, swap,
recover), ``store`` + ``migrations`` (SQLite), ``vectors`` + ``backends/``
(FAISS index types), ``encoder`` + ``config``/``loading``/``precision``/``bert``/
``pooling`` (the model), ``passages`` (windows), ``sources`` (input files),
``options`` (choices and defaults, no heavy imports).

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
    from .config import EncoderConfig
    from .encoder import Encoder
    from .indexer import Index
    from .records import AddResult, DeleteResult, IndexInfo, RebuildResult

_LAZY = {
    "Index": "indexer", "IndexInfo": "records", "AddResult": "records",
    "DeleteResult": "records", "RebuildResult": "records", "Encoder": "encoder",
    "EncoderConfig": "config",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'index' has no attribute {name!r}")


__all__ = [
    "Index", "IndexInfo", "AddResult", "DeleteResult", "RebuildResult", "Encoder", "EncoderConfig",
    "SemsearchError", "InputError", "IndexNotFoundError", "IndexExistsError",
    "ConfigMismatchError", "ModelLoadError", "IndexCorruptError", "IndexLockedError",
]
