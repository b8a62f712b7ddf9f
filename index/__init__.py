"""semsearch indexing: the encoder, the SQLite metadata store, the FAISS vector index and the indexer.

The package is cut by concern; each sub-package's docstring says what it owns
and what it may import (``tests/test_architecture.py`` checks the layering):

- ``model/``: text to vectors (the encoder, its runners, tokens and word vectors);
- ``ann/``: the FAISS vector indexes (one backend per file, the registry, tuning);
- ``ingest/``: input files to documents and passages, and the encoding engine seam;
- ``storage/``: the index folder, SQLite, generations and deltas, the writer, check;
- ``lexical/``: the optional BM25 index;
- ``distributed/``: Ray encoding, shards and splitting.

The public face is here: ``indexer.Index``, ``records`` (what calls return),
``errors``, ``options`` (choices and defaults, no heavy imports) and ``files``
(durable writes).

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
    from .indexer import Index
    from .model.config import EncoderConfig
    from .model.encoder import Encoder
    from .records import AddResult, DeleteResult, IndexInfo, RebuildResult

_LAZY = {
    "Index": "indexer", "IndexInfo": "records", "AddResult": "records",
    "DeleteResult": "records", "RebuildResult": "records", "Encoder": "model.encoder",
    "EncoderConfig": "model.config",
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
