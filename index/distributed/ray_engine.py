"""Encoding on Ray (``--engine ray``): Ray Data hands the writer's chunks to a pool of encoder actors.

``RayEngine`` is an engine of ``index.ingest.engines``: the writer still reads the
documents, skips unchanged texts, and commits every chunk itself, in input
order, in its own transactions, so a Ray build keeps every guarantee of the
local one (crash-safe, resumable, unchanged texts not encoded again). What
moves to Ray is the encoding: the texts of a window of chunks become a Ray
Data dataset (``ray.data.from_items``), ``map_batches`` runs them through an
actor pool (``compute=ray.data.ActorPoolStrategy(size=n)``) whose actors
(``EncodeActor``) each load the index's recorded encoder once, refuse a model
whose fingerprint differs, and return each document's passage spans and
float32 vectors. The results stream back while the pool keeps encoding, and
the writer commits each chunk as soon as all of its documents are back, so
commits and encoding overlap. A window (``window_chunks`` chunks) bounds the
memory held in flight; each window runs its own actor pool.

The documents are read on the driver with ``index.ingest.sources`` (every format,
the same ids, titles and bad-line reports as the local path, standard input
included) rather than with ``ray.data.read_json``: the writer needs them in
input order anyway (the last of a repeated id wins), and the input need not
be on storage the cluster can reach. Ray is imported only here, when used.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import numpy as np

from .. import options
from ..errors import SemsearchError
from ..ingest.engines import Chunk, EncodeSettings, Progress
from ..ingest.passages import EncodedDocument, encode_documents
from ..model.config import EncoderConfig
from ..records import Passage

MISSING_RAY = "--engine ray needs Ray: pip install 'semsearch[ray]'"
SEMSEARCH_ERROR = re.compile(r"^index\.errors\.\w+: (.+)$", re.MULTILINE)


def import_ray():
    """The ``ray`` module, with Ray Data; one clear line when Ray is not installed."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise SemsearchError(MISSING_RAY) from None
    return ray


def connect(address: str | None = None):
    """Ray, initialised: the running Ray of this process, else ``address`` (``auto``: the cluster this
    machine belongs to; ``ray://host:10001``: a remote one), else a new Ray on this machine."""
    ray = import_ray()
    if not ray.is_initialized():
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise SemsearchError(f"could not connect to Ray at {address or 'a new local instance'}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    return ray


@dataclass(frozen=True)
class RaySettings:
    """How the Ray engine spreads the work."""

    address: str | None = None  # None: this process's Ray, or a new local one; "auto": the running cluster
    actors: int | None = None  # encoder actors (None: the cluster's CPUs divided by cpus_per_actor)
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0  # e.g. 1 with a GPU per actor (the encoder then runs on CUDA)
    batch_documents: int = 64  # documents per actor call (their passages are length-sorted together)
    window_chunks: int = 16  # commit-sized chunks in flight at once (one Ray Data dataset each window)
    batch_size: int | None = None  # texts per model call inside an actor (None: the default)


class EncodeActor:
    """One actor of the pool: loads the index's encoder once, then encodes batches of documents."""

    def __init__(self, config: EncoderConfig, dimension: int, overlap: int, where: str,
                 batch_size: int | None, device: str | None):
        from ..model.encoder import Encoder

        self.encoder = Encoder.for_config(config, batch_size=batch_size, device=device)
        config.check_loaded(self.encoder.config, self.encoder.dimension, dimension, where)
        self.overlap = overlap

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = {str(row): str(text) for row, text in enumerate(batch["text"])}  # an id may repeat across chunks
        encoded = encode_documents(self.encoder, texts, self.overlap)
        docs = [encoded[str(row)] for row in range(len(texts))]
        spans = [json.dumps([[p.order, p.start, p.end] for p in doc.passages]) for doc in docs]
        vectors = [np.ascontiguousarray(doc.vectors, dtype=np.float32).tobytes() for doc in docs]
        return {"chunk": batch["chunk"], "id": batch["id"],
                "spans": np.array(spans, dtype=object), "vectors": np.array(vectors, dtype=object)}


class RayEngine:
    """Encodes the writer's chunks on a Ray actor pool (see the module docstring)."""

    def __init__(self, settings: RaySettings | None = None):
        self.settings = settings or RaySettings()
        self.ray = connect(self.settings.address)
        logging.getLogger("ray.data").setLevel(logging.ERROR)  # failures are raised, one line each
        context = self.ray.data.DataContext.get_current()
        context.enable_progress_bars = False

    @property
    def actors(self) -> int:
        if self.settings.actors:
            return self.settings.actors
        cpus = float(self.ray.cluster_resources().get("CPU", 1))
        return max(1, int(cpus // max(self.settings.cpus_per_actor, 1e-9)))

    @property
    def documents_per_call(self) -> int:
        """How many documents a caller routing documents to several indexes should gather per add."""
        return options.COMMIT_EVERY * self.settings.window_chunks

    def encode_chunks(self, chunks: Iterable[Chunk], settings: EncodeSettings,
                      progress: Progress | None = None) -> Iterator[tuple[Chunk, dict[str, EncodedDocument]]]:
        window: list[Chunk] = []
        for chunk in chunks:
            window.append(chunk)
            if len(window) >= self.settings.window_chunks:
                yield from self.encode_window(window, settings, progress)
                window = []
        if window:
            yield from self.encode_window(window, settings, progress)

    def encode_window(self, window: list[Chunk], settings: EncodeSettings,
                      progress: Progress | None) -> Iterator[tuple[Chunk, dict[str, EncodedDocument]]]:
        """Encode a window of chunks on the actor pool; yield each chunk, in order, once it is complete."""
        rows = [{"chunk": n, "id": doc_id, "text": text}
                for n, chunk in enumerate(window) for doc_id, text in chunk.texts.items()]
        results: list[dict[str, EncodedDocument]] = [{} for _ in window]
        done = 0
        for batch in self.run(rows, settings):
            for n, doc_id, spans, blob in zip(batch["chunk"], batch["id"], batch["spans"], batch["vectors"]):
                n, doc_id = int(n), str(doc_id)
                text = window[n].to_encode[doc_id][0]
                vectors = np.frombuffer(blob, dtype=np.float32).reshape(-1, settings.dimension).copy()
                passages = [Passage(o, s, e, text[s:e]) for o, s, e in json.loads(spans)]
                results[n][doc_id] = EncodedDocument(passages, vectors)
                if progress:
                    progress(1)
            while done < len(window) and len(results[done]) == len(window[done].to_encode):
                yield window[done], results[done]
                results[done] = {}
                done += 1
        missing = sum(len(c.to_encode) - len(r) for c, r in zip(window[done:], results[done:]))
        if missing:
            raise SemsearchError(f"Ray returned no vectors for {missing} document(s); nothing of them was written")
        # (only chunks with nothing left to encode can remain here)
        yield from ((window[n], results[n]) for n in range(done, len(window)))

    def run(self, rows: list[dict[str, Any]], settings: EncodeSettings) -> Iterator[dict[str, np.ndarray]]:
        """The encoded rows, batch by batch, as the actor pool finishes them (in any order)."""
        if not rows:
            return
        ray, s = self.ray, self.settings
        blocks = max(1, min(len(rows) // max(1, s.batch_documents), 1000))
        dataset = ray.data.from_items(rows, override_num_blocks=blocks).map_batches(
            EncodeActor,
            fn_constructor_kwargs={"config": settings.config, "dimension": settings.dimension,
                                   "overlap": settings.overlap, "where": settings.where,
                                   "batch_size": s.batch_size, "device": "cuda" if s.gpus_per_actor else None},
            compute=ray.data.ActorPoolStrategy(size=min(self.actors, blocks)),
            batch_size=s.batch_documents, batch_format="numpy",
            num_cpus=s.cpus_per_actor, num_gpus=s.gpus_per_actor or None)
        try:
            yield from dataset.iter_batches(batch_size=None, batch_format="numpy")
        except SemsearchError:
            raise
        except Exception as exc:  # an actor failed: say why in one line (a model mismatch, a missing model...)
            raise SemsearchError(f"encoding on Ray failed: {root_cause(exc)}") from None


def root_cause(exc: BaseException) -> str:
    """One line saying why a Ray failure happened: the semsearch error an actor raised (a model that
    does not match the index, a missing model...), else the innermost message."""
    chain, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        chain.append(exc)
        exc = exc.__cause__ or getattr(exc, "cause", None) or exc.__context__
        exc = exc if isinstance(exc, BaseException) else None
    for error in chain:  # an actor's error arrives as text: the last line of its traceback
        found = SEMSEARCH_ERROR.findall(str(error))
        if found:
            return found[-1]
    for error in reversed(chain):
        lines = [line for line in str(error).splitlines() if line.strip()]
        if lines:
            return f"{type(error).__name__}: {lines[-1].strip()}"
    return type(chain[-1]).__name__ if chain else "unknown error"
