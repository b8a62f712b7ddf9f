"""What can be read off a model folder without loading it (no torch, no transformers).

``ModelFacts`` comes from ``config.json``: the architecture, layer count,
width and position limit, enough to check a requested layer and max length
and to tell whether the ONNX export can handle the model. ``signature`` is a
cheap identity of the folder's files (names, sizes, modification times): a
cached fingerprint is trusted only while the signature is unchanged, so
overwritten weights are noticed without hashing them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from .. import options
from ..errors import SemsearchError

SIGNED_SUFFIXES = (".json", ".txt", ".safetensors", ".bin", ".model")


@dataclass(frozen=True)
class ModelFacts:
    model_type: str
    num_layers: int
    hidden_size: int
    max_positions: int
    position_embedding_type: str = "absolute"
    is_decoder: bool = False

    @classmethod
    def read(cls, model_path: str) -> "ModelFacts | None":
        """The facts of a local model folder, or None when it has no readable ``config.json``."""
        try:
            cfg = json.loads((Path(model_path) / "config.json").read_text(encoding="utf-8"))
            return cls(
                model_type=str(cfg.get("model_type", "")), num_layers=int(cfg["num_hidden_layers"]),
                hidden_size=int(cfg["hidden_size"]), max_positions=int(cfg.get("max_position_embeddings") or 512),
                position_embedding_type=str(cfg.get("position_embedding_type") or "absolute"),
                is_decoder=bool(cfg.get("is_decoder", False)),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    @property
    def plain_bert(self) -> bool:
        """A BERT encoder with absolute positions: what the lean pass and the ONNX export handle."""
        return self.model_type == "bert" and self.position_embedding_type == "absolute" and not self.is_decoder


def check_layer(layer: int, num_layers: int) -> int:
    """``layer`` when it indexes ``hidden_states`` (embeddings + one entry per layer), else an error."""
    n = num_layers + 1
    if not -n <= layer < n:
        raise SemsearchError(
            f"layer {layer} is out of range for this model: it has {num_layers} layers, "
            f"so choose from {-n} to {n - 1}"
        )
    return layer


def resolve_max_length(requested: int | None, model_path: str, max_positions: int, n_special: int) -> int:
    """Tokens per model input: ``requested``, else the folder's sentence_bert_config.json
    ``max_seq_length``, else ``options.DEFAULT_MAX_LENGTH``; at most the model's
    ``max_positions`` and more than the ``n_special`` special tokens."""
    if requested is None:
        requested = options.DEFAULT_MAX_LENGTH
        st_config = Path(model_path) / "sentence_bert_config.json"
        if st_config.is_file():
            try:
                requested = int(json.loads(st_config.read_text())["max_seq_length"])
            except (ValueError, KeyError, TypeError):
                pass
    if requested <= n_special:
        raise SemsearchError(f"max length {requested} leaves no room for text")
    return min(int(requested), max_positions)


def signature(model_path: str) -> str | None:
    """A hash of the names, sizes and modification times of a folder's model files
    (None when ``model_path`` is not a folder, e.g. a hub id)."""
    folder = Path(model_path)
    if not folder.is_dir():
        return None
    h = hashlib.sha256(str(folder.resolve()).encode())
    for entry in sorted(folder.iterdir()):
        if entry.is_file() and entry.suffix in SIGNED_SUFFIXES:
            st = entry.stat()
            h.update(f"{entry.name}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}\n".encode())
    return h.hexdigest()[:24]
