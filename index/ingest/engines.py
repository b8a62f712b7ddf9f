"""Encoding engines: who turns the writer's commit-sized chunks of texts into passages and vectors.

The writer (``writer.py``) reads the documents, cuts them into chunks of
``options.COMMIT_EVERY``, decides per chunk which documents need encoding
(an unchanged text, by content hash, is not encoded again) and commits each
chunk in input order, one transaction per chunk. Between the two it hands the
chunks to an engine, which only encodes: it never touches the index.

``LocalEngine`` (the default) encodes in this process with the index's own
encoder, one chunk at a time, each right before it is committed.
``index.distributed.ray_engine.RayEngine`` encodes on a Ray actor pool and runs ahead of
the writer: it may encode a chunk before the chunks in front of it are
committed. The writer allows for that (``Writer.add``): a document still
waiting in an uncommitted chunk is always sent for encoding, and every
document is checked against the store again just before its chunk commits.

An engine has one method, ``encode_chunks(chunks, settings, progress)``: it
takes an iterable of :class:`Chunk` and yields ``(chunk, {id: EncodedDocument})``
for each, in the order it got them, with an entry for every id of
``chunk.texts`` (the contract of ``passages.encode_documents``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Protocol

from ..model.config import EncoderConfig
from .passages import EncodedDocument, encode_documents

Progress = Callable[[int], None]


@dataclass
class Chunk:
    """One commit-sized chunk of an add, as the writer planned it."""

    ids: list[str]  # every id of the chunk, in input order
    to_encode: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # id -> (text, metadata JSON, hash)
    meta_only: list[tuple[str, str]] = field(default_factory=list)  # (id, metadata JSON): same text, new metadata

    @property
    def texts(self) -> dict[str, str]:
        """``id -> text`` of the documents to encode."""
        return {doc_id: v[0] for doc_id, v in self.to_encode.items()}


@dataclass(frozen=True)
class EncodeSettings:
    """What an engine needs to encode as the index does: its recorded configuration (the model's
    fingerprint included), vector dimension and passage overlap; ``where`` names the index."""

    config: EncoderConfig
    dimension: int
    overlap: int
    where: str


class Engine(Protocol):
    def encode_chunks(self, chunks: Iterable[Chunk], settings: EncodeSettings,
                      progress: Progress | None = None) -> Iterator[tuple[Chunk, dict[str, EncodedDocument]]]:
        ...


class LocalEngine:
    """Encodes in this process with the index's encoder, one chunk at a time (the default)."""

    def __init__(self, encoder: Callable[[], object]):
        self.encoder = encoder  # the index's encoder, loaded on first use (an unchanged chunk loads nothing)

    def encode_chunks(self, chunks: Iterable[Chunk], settings: EncodeSettings,
                      progress: Progress | None = None) -> Iterator[tuple[Chunk, dict[str, EncodedDocument]]]:
        for chunk in chunks:
            texts = chunk.texts
            yield chunk, (encode_documents(self.encoder(), texts, settings.overlap, progress) if texts else {})
