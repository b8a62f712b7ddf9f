"""The whitening an index records: its configuration, the fitted transform, and when it is refitted.

An index records ``whitening`` (its configuration: ``mode`` auto/on/off and
``dims``, the directions kept) and ``whitening_fit`` (the decision, and when a
transform was fitted: its sha256, dimension, how many corpus and background
vectors it was fitted on, and the passage count then); the transform's arrays
are a binary setting of the store (``get_blob``). All change in one commit
with the FAISS vectors they produced. SQLite keeps the method's raw vectors,
so a refit never re-encodes: the FAISS vectors are ``transform(stored)``, and
every query vector meets them through the same transform (``Snapshot``). An
index recorded before whitening existed has neither key and stays raw.

A fit is due when the configuration asks for whitening and nothing was fitted
for it yet, and when the index has doubled since the fit (like search tuning).

Every fit also pools a sample of sentences cut from the stored passages
(``fit_sentences``: the corpus's words at a query's length), encoded with
the index's encoder at fit time.

An index may also record ``whitening_questions``: texts of questions its users
ask (``faq calibrate`` records its calibration questions, their texts only),
encoded with the index's encoder and pooled into every fit, so that the
transform fits the query side too (``docs/faq.md``).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from .. import options
from ..ann import registry
from ..errors import IndexCorruptError, SemsearchError
from ..model import background, fit_sentences, whitening_policy
from ..model.whitening import Whitening, fit, sample_rows
from .store import MetadataStore

log = logging.getLogger("semsearch")

SETTING = "whitening"  # {"mode": ..., "dims": ...}
FIT = "whitening_fit"  # the decision and the fitted transform's summary
BLOB = "whitening"  # the transform's arrays (MetadataStore.get_blob)
GROWTH = 2.0  # refit when the index has this many times the passages it was fitted on
# ``auto`` keeps an index of fewer passages raw: on the examples' 20 FAQ questions every whitening tried
# (and centring alone) ranked worse than raw, on StackFAQ's 125 better (docs/quality.md#whitening).
MIN_PASSAGES = 100
QUESTIONS = "whitening_questions"  # question texts pooled into every fit (``faq calibrate``)
MAX_QUESTIONS = 5000

_cache: dict[str, Whitening] = {}  # sha256 -> transform, a few per process
_background: dict[Any, np.ndarray] = {}  # encoder configuration -> the background sample's vectors
_texts: dict[Any, dict[str, np.ndarray]] = {}  # encoder configuration -> {text: its vector}


def configuration(mode: str | None = None, dims: int | None = None) -> dict[str, Any]:
    """A whitening configuration to record, refused with one line when it makes no sense."""
    mode = options.DEFAULT_WHITENING if mode is None else mode
    if mode not in options.WHITENINGS:
        raise SemsearchError(f"--whitening must be one of {', '.join(options.WHITENINGS)} (got {mode!r})")
    if dims is not None and int(dims) < 0:
        raise SemsearchError(f"--whitening-dims must be a number of dimensions, or 0 for all (got {dims})")
    return {"mode": mode, "dims": int(dims) if dims else None}


def reconfigured(info: Mapping[str, Any], mode: str | None, dims: int | None) -> dict[str, Any]:
    """The recorded configuration with ``mode`` and ``dims`` changed where given (``dims`` 0: all)."""
    current = recorded(info) if SETTING in info else configuration()
    return configuration(current["mode"] if mode is None else mode, current["dims"] if dims is None else dims)


def recorded(info: Mapping[str, Any]) -> dict[str, Any]:
    """The recorded configuration; an index from before whitening is ``off`` (it answers as it did)."""
    return dict(info.get(SETTING) or {"mode": "off", "dims": None})


def decision(info: Mapping[str, Any]) -> whitening_policy.Decision:
    return whitening_policy.decide(recorded(info)["mode"], str(info["model"]), int(info["layer"]))


def transform(store: MetadataStore, info: Mapping[str, Any]) -> Whitening | None:
    """The transform of the committed state whose ``info`` is given (None: raw vectors); read inside
    the same transaction as ``info``. A stored transform that does not match its record is refused."""
    fitted = info.get(FIT) or {}
    digest = fitted.get("sha256")
    if not digest:
        return None
    if digest not in _cache:
        data = store.get_blob(BLOB)
        if data is None:
            raise IndexCorruptError(f"index {store.path.parent} records a whitening transform but does not store it; "
                                    "run `semsearch index rebuild` to fit it again")
        try:
            loaded = Whitening.from_bytes(data)
        except (ValueError, OSError, KeyError) as exc:
            raise IndexCorruptError(f"the whitening transform stored in {store.path.parent} is damaged ({exc}); "
                                    "run `semsearch index rebuild` to fit it again") from exc
        if loaded.digest() != digest:
            raise IndexCorruptError(f"the whitening transform stored in {store.path.parent} is not the one recorded; "
                                    "run `semsearch index rebuild` to fit it again")
        if len(_cache) > 8:
            _cache.clear()
        _cache[digest] = loaded
    return _cache[digest]


def index_dimension(info: Mapping[str, Any]) -> int:
    """The dimension of the FAISS vectors: the transform's when whitened, else the encoder's."""
    fitted = info.get(FIT) or {}
    return int(fitted["dimension"]) if fitted.get("sha256") else int(info["dimension"])


def faiss_vectors(store: MetadataStore, info: Mapping[str, Any],
                  next_table: bool = False) -> Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]]:
    """A factory of the stored ``(ids, vectors)`` batches as the FAISS index holds them (whitened)."""
    whitening, dimension = transform(store, info), int(info["dimension"])

    def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for ids, vecs in store.iter_vectors(dimension, next_table=next_table):
            yield ids, (vecs if whitening is None else whitening.apply(vecs))
    return batches


def apply(whitening: Whitening | None, vectors: np.ndarray) -> np.ndarray:
    return vectors if whitening is None else whitening.apply(vectors)


def due(info: Mapping[str, Any], passages: int) -> bool:
    """Whether a (re)fit is due: the configuration changed since the last decision, or it whitens
    and the index has grown ``GROWTH`` times since the fit."""
    config, fitted = recorded(info), info.get(FIT)
    if fitted is None:
        return SETTING in info
    if fitted.get("mode") != config["mode"] or fitted.get("dims") != config["dims"]:
        return True
    if not fitted.get("whiten"):
        return (fitted.get("layer") != info.get("layer") or fitted.get("model") != info.get("model")
                or (bool(fitted.get("too_few")) and passages >= MIN_PASSAGES))
    return passages >= GROWTH * max(1, int(fitted.get("passages", 0))) and passages > int(fitted.get("passages", 0))


def background_vectors(encoder) -> np.ndarray:
    """The generated background sentences encoded by ``encoder`` (once per configuration and process)."""
    key = encoder.config
    if key not in _background:
        if len(_background) > 4:
            _background.clear()
        _background[key] = encoder.encode(background.sentences(), warn=False)
    return _background[key]


def text_vectors(encoder, texts: Sequence[str]) -> np.ndarray:
    """Texts pooled into fits (recorded questions, corpus sentences) encoded by ``encoder``, each
    text once per configuration and process (a calibration's out-of-fold fits ask for subsets of
    the questions: ``search.faq_crossfit``; a refit asks again for the same sentences)."""
    if encoder.config not in _texts and len(_texts) > 4:
        _texts.clear()
    known = _texts.setdefault(encoder.config, {})
    if len(known) > 50_000:
        known.clear()
    missing = list(dict.fromkeys(t for t in texts if t not in known))
    if missing:
        known.update(zip(missing, encoder.encode(missing, warn=False)))
    return np.stack([known[t] for t in texts]) if texts else np.zeros((0, encoder.dimension), np.float32)


def corpus_sentences(store: MetadataStore, limit: int | None = None) -> list[str]:
    """The sample of the stored passages' sentences that a fit pools (``fit_sentences``), at most
    ``limit`` (``fit_sentences.SIZE``), read from a random sample of as many passages."""
    limit = fit_sentences.SIZE if limit is None else limit
    if limit <= 0:
        return []
    ids = store.passage_ids()
    rows = sample_rows(len(ids), limit=limit)
    chosen = ids if rows is None else ids[rows]
    found = store.passages(chosen.tolist())
    return fit_sentences.sample((found[int(i)][1].text for i in chosen if int(i) in found), limit)


def sample(store: MetadataStore, dimension: int, passages: int, next_table: bool = False) -> np.ndarray:
    """The corpus's stored raw vectors the fit reads (all of them, or a random sample of them)."""
    rows = sample_rows(passages)
    chunks, seen = [], 0
    for _, vecs in store.iter_vectors(dimension, next_table=next_table):
        if rows is None:
            chunks.append(vecs)
        else:
            pick = rows[(rows >= seen) & (rows < seen + len(vecs))] - seen
            chunks.append(vecs[pick])
        seen += len(vecs)
    return np.concatenate(chunks) if chunks else np.zeros((0, dimension), np.float32)


def fit_for(info: Mapping[str, Any], corpus: np.ndarray, encoder: Callable[[], Any], passages: int,
            sentences: Callable[[], Sequence[str]] | None = None) -> tuple[Whitening | None, dict[str, Any]]:
    """The decision for ``info``'s configuration and, when it whitens, the transform fitted on
    ``corpus`` pooled with the background sample, the corpus's sentences (``sentences()``, asked
    only then) and the recorded questions (all encoded by ``encoder()``, loaded only then); returns
    ``(transform, record)``."""
    config = recorded(info)
    decided = whitening_policy.decide(config["mode"], str(info["model"]), int(info["layer"]))
    record = {**config, "whiten": decided.whiten, "reason": decided.reason, "model": info.get("model"),
              "layer": info.get("layer")}
    if decided.whiten and config["mode"] == "auto" and passages < MIN_PASSAGES:
        record.update(whiten=False, too_few=True, passages=int(passages),
                      reason=f"auto: {passages} passages are too few for a whitening that helps (it is fitted "
                             f"from {MIN_PASSAGES}; --whitening on to whiten anyway)")
    if not record["whiten"]:
        return None, record
    model = encoder()
    extra = background_vectors(model)
    texts = [str(t) for t in (info.get(QUESTIONS) or [])][:MAX_QUESTIONS]
    asked = text_vectors(model, texts) if texts else extra[:0]
    cut = list(sentences()) if sentences is not None else []
    said = text_vectors(model, cut) if cut else extra[:0]
    dims = config["dims"]
    if dims is not None and dims > corpus.shape[1]:
        raise SemsearchError(f"--whitening-dims {dims} is more than the model's {corpus.shape[1]} dimensions")
    # The background counts at least as much as the corpus's sentences: both stand for the queries'
    # side, and the corpus's own sentences alone pulled a fit away from everyday questions
    # (docs/quality.md: help pages asked plain questions lost with them, and not with both).
    weight = max(1.0, len(said) / len(extra)) if len(extra) else 1.0
    rows = [(part, w) for part, w in ((corpus, 1.0), (extra, weight), (said, 1.0), (asked, 1.0)) if len(part)]
    weights = None if weight == 1.0 else np.concatenate([np.full(len(part), w) for part, w in rows])
    whitening = fit(np.concatenate([part for part, _ in rows]), dims, weights=weights)
    record.update(sha256=whitening.digest(), dimension=whitening.dimension, vectors=int(len(corpus)),
                  background=int(len(extra)), background_weight=weight, sentences=int(len(said)),
                  questions=int(len(asked)), passages=int(passages),
                  source=f"{len(corpus)} corpus vectors + {len(extra)} generated background sentences"
                         + (f" (each counted {weight:g} times)" if weight != 1.0 else "")
                         + (f" + {len(said)} sentences of the corpus" if len(said) else "")
                         + (f" + {len(asked)} recorded questions" if len(asked) else ""))
    return whitening, record


def put(store: MetadataStore, whitening: Whitening | None, record: dict[str, Any]) -> None:
    """Record a decision and its transform (inside the commit that writes the matching FAISS vectors)."""
    store.set_info({FIT: record, "search_tuning": None})
    store.set_blob(BLOB, None if whitening is None else whitening.to_bytes())
    if whitening is not None:
        _cache[whitening.digest()] = whitening


def fit_in_store(store: MetadataStore, encoder: Callable[[], Any], passages: int) -> dict[str, Any]:
    """Decide and fit the recorded configuration on the stored vectors and record both, inside a
    commit that then writes the FAISS vectors they produce; returns the info as recorded."""
    info = store.get_info()
    if SETTING not in info:  # an index from before whitening: raw, as it always was
        return info
    corpus = sample(store, int(info["dimension"]), passages)
    whitening, record = fit_for(info, corpus, encoder, passages, lambda: corpus_sentences(store))
    put(store, whitening, record)
    return store.get_info()


def partial(info: Mapping[str, Any], passages: int) -> bool:
    """Whether the index whitens with a fit that saw fewer passages than it stores now (a build's
    first chunks: ``Writer.finish_build`` refits on all of them)."""
    fitted = info.get(FIT) or {}
    return bool(fitted.get("whiten")) and int(fitted.get("passages", 0)) < passages


def refit_in_commit(store: MetadataStore, encoder: Callable[[], Any], folder) -> Any:
    """Inside a commit whose rows are written: fit on the stored vectors (these rows included),
    record it, and return the vector index of every stored vector under it (for ``commit.replace``)."""
    n = store.counts()[1]
    info = fit_in_store(store, encoder, n)
    fit = info.get(FIT) or {}
    # A fit is news on the command line; a decision to keep the raw vectors is in `index info`.
    (log.info if fit.get("whiten") else log.debug)("whitening: %s", fit.get("reason", ""))
    return registry.build(info.get("index_type", options.DEFAULT_INDEX_TYPE), index_dimension(info), n,
                          faiss_vectors(store, info), workdir=folder)


def refit(store: MetadataStore, generations, encoder: Callable[[], Any], force: bool = False) -> bool:
    """Refit when ``due`` (or with ``force``) and replace the FAISS vectors with the stored ones
    whitened by the new transform, in one commit of ``generations`` (the writer's, under the lock).
    Nothing is encoded but the background sample and the corpus sentences (once per process)."""
    info = store.get_info()
    n = store.counts()[1]
    if not (force or due(info, n)):
        return False
    with generations.commit() as commit:
        commit.replace(refit_in_commit(store, encoder, generations.folder))
    return True
