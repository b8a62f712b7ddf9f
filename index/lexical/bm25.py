"""The optional BM25 index of an index's passages (``bm25s``): built, saved per generation, loaded.

Owns the lexical side of hybrid retrieval: how passage texts are tokenised
(``Tokenization``), the BM25 index over the stored passages' texts
(``LexicalIndex``: build, search with an allowed-id filter, save, load) and
``LexicalIndexes``, which keeps the one of SQLite's committed generation for
one index folder.

On disk it is a folder ``bm25-<generation>/`` next to the FAISS files. A writer
makes it after the generation committed, under the write lock: written to a
hidden temporary folder and renamed into place, then the folders of other
generations are removed. A reader loads the folder of the generation its
read snapshot sees, and only if its recorded passage count and id sum match
SQLite's, its files the sizes and CRC-32s its ``semsearch.json`` records, and
that ``semsearch.json`` the CRC-32 the writer then records in SQLite
(``bm25_seal``: a whole folder of another index is not served); when there
is none (the writer is still making it, the index was written by a process
without hybrid, a folder is damaged) the reader builds
the index in memory from the snapshot's passages. A stale index is never
served. ``bm25s`` and ``PyStemmer`` are imported on first use
(``pip install 'semsearch[hybrid]'``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SemsearchError
from ..files import fsync_dir, fsync_file
from ..storage.folder import numbered_entries
from ..storage.seals import crc_of
from ..storage.store import MetadataStore

log = logging.getLogger("semsearch")

SETTING = "hybrid"  # recorded in the index info: keep a BM25 index and search hybrid by default
SEAL = "bm25_seal"  # recorded in the index info: [generation, CRC-32 of that folder's semsearch.json]
MISSING = "--hybrid needs bm25s: pip install 'semsearch[hybrid]'"
MISSING_STEMMER = "--hybrid needs PyStemmer: pip install 'semsearch[hybrid]'"
FOLDER_PATTERN = re.compile(r"^bm25-(\d+)$")
TEMPORARY_GLOB = ".bm25-*.tmp-*"
FORMAT = 1  # of the folder's semsearch.json
META = "semsearch.json"
IDS = "passage_ids.npy"
K1, B, METHOD = 1.5, 0.75, "lucene"  # bm25s's defaults (Lucene's BM25)


def require() -> Any:
    """The ``bm25s`` module; a one-line ``SemsearchError`` when it (or PyStemmer) is not installed."""
    try:
        import bm25s
    except ImportError:
        raise SemsearchError(MISSING) from None
    try:
        import Stemmer  # noqa: F401  (PyStemmer)
    except ImportError:
        raise SemsearchError(MISSING_STEMMER) from None
    return bm25s


def folder_name(generation: int) -> str:
    return f"bm25-{generation}"


def bm25_folders(folder: Path) -> dict[int, Path]:
    """``generation -> path`` of the BM25 folders present in an index folder."""
    return numbered_entries(folder, FOLDER_PATTERN, folders=True)


@dataclass(frozen=True)
class Tokenization:
    """How texts become BM25 terms: bm25s's tokeniser (lower-cased runs of two or more word
    characters, ``(?u)\\b\\w\\w+\\b``), its English stopword list (NLTK's), and the Snowball
    English stemmer (PyStemmer). Recorded with each saved index and compared on load."""

    stopwords: str = "en"
    stemmer: str = "english"

    def tokenize(self, texts: list[str]) -> list[list[str]]:
        bm25s = require()
        import Stemmer

        stemmer = Stemmer.Stemmer(self.stemmer) if self.stemmer else None
        return bm25s.tokenize(texts, lower=True, stopwords=self.stopwords, stemmer=stemmer,
                              return_ids=False, show_progress=False)


@dataclass
class LexicalIndex:
    """BM25 over the passages of one committed generation; ``passage_ids[i]`` is the passage of
    bm25s document ``i`` (ascending). ``retriever`` is None when no passage has a term."""

    generation: int
    passage_ids: np.ndarray
    retriever: Any = field(repr=False, default=None)
    tokenization: Tokenization = field(default_factory=Tokenization)

    @property
    def summary(self) -> tuple[int, int]:
        """``(count, sum)`` of the passage ids, as ``MetadataStore.passage_id_summary`` gives them."""
        return len(self.passage_ids), int(self.passage_ids.sum())

    @classmethod
    def build(cls, store: MetadataStore, generation: int, tokenization: Tokenization | None = None,
              ) -> "LexicalIndex":
        """Index every stored passage's text; call inside one read snapshot of ``generation``."""
        bm25s = require()
        tokenization = tokenization or Tokenization()
        ids: list[int] = []
        tokens: list[list[str]] = []
        for rows in store.iter_passage_texts():
            ids += [pid for pid, _ in rows]
            tokens += tokenization.tokenize([text for _, text in rows])
        retriever = None
        if any(tokens):
            retriever = bm25s.BM25(k1=K1, b=B, method=METHOD)
            retriever.index(tokens, show_progress=False)
        return cls(generation, np.asarray(ids, dtype=np.int64), retriever, tokenization)

    def search(self, query: str, n: int, allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        """The ``n`` best passages for ``query`` as ``(passage id, BM25 score)``, best first; only
        passages sharing a term with the query (score > 0), and among ``allowed`` when given."""
        if self.retriever is None or n < 1:
            return []
        terms = self.retriever.get_tokens_ids(self.tokenization.tokenize([query])[0])
        if not terms:
            return []
        scores = np.asarray(self.retriever.get_scores_from_ids(terms), dtype=np.float32)
        if allowed is not None:
            scores = np.where(np.isin(self.passage_ids, allowed), scores, 0.0)
        hits = np.flatnonzero(scores > 0)
        if len(hits) > n:
            hits = hits[np.argpartition(-scores[hits], n - 1)[:n]]
        hits = hits[np.lexsort((self.passage_ids[hits], -scores[hits]))]  # score, then passage id
        return [(int(self.passage_ids[i]), float(scores[i])) for i in hits]

    # --- on disk ------------------------------------------------------------------------
    def save(self, folder: Path) -> Path:
        """Write as ``folder/bm25-<generation>/``: into a temporary folder, every file synced, then
        renamed into place (an existing folder of the same generation is kept)."""
        final = Path(folder) / folder_name(self.generation)
        tmp = Path(folder) / f".{final.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            try:
                tmp.mkdir()
                if self.retriever is not None:
                    self.retriever.save(tmp, show_progress=False)
                np.save(tmp / IDS, self.passage_ids, allow_pickle=False)
                count, total = self.summary
                meta = {"format": FORMAT, "generation": self.generation, "passages": count, "id_sum": total,
                        "empty": self.retriever is None, "tokenization": asdict(self.tokenization),
                        "k1": K1, "b": B, "method": METHOD,
                        "files": {f.name: [f.stat().st_size, crc_of(f)] for f in sorted(tmp.iterdir())}}
                (tmp / META).write_text(json.dumps(meta), encoding="utf-8")
                for file in tmp.iterdir():
                    fsync_file(file)
                fsync_dir(tmp)
            except OSError as exc:
                raise SemsearchError(f"cannot write {final}: {exc.strerror or exc}") from None
            if final.exists():  # made by an earlier session for this very generation
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                os.rename(tmp, final)
                fsync_dir(Path(folder))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    @classmethod
    def load(cls, path: Path, generation: int, expected: tuple[int, int]) -> "LexicalIndex | None":
        """The saved index at ``path`` if it is of ``generation``, of today's tokenisation and holds
        exactly the passages ``expected`` (count, id sum); None when missing, damaged or stale."""
        bm25s = require()
        try:
            meta = json.loads((Path(path) / META).read_text(encoding="utf-8"))
            tokenization = Tokenization(**meta["tokenization"])
            if (meta.get("format") != FORMAT or meta.get("generation") != generation
                    or tokenization != Tokenization()
                    or (meta.get("passages"), meta.get("id_sum")) != tuple(expected)
                    or not _sealed(Path(path), meta.get("files"))):
                return None
            ids = np.load(Path(path) / IDS, allow_pickle=False).astype(np.int64)
            retriever = None if meta.get("empty") else bm25s.BM25.load(path, mmap=False, load_corpus=False)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        index = cls(generation, ids, retriever, tokenization)
        if index.summary != tuple(expected) or (
                retriever is not None and retriever.scores.get("num_docs") != len(ids)):
            return None
        return index


def _sealed(path: Path, files: Any) -> bool:
    """True when every file of the folder has the size and CRC-32 its ``semsearch.json`` recorded
    (a folder saved before seals records none: checked by counts only, as then)."""
    if files is None:
        return True
    present = {f.name for f in path.iterdir() if f.name != META}
    return (isinstance(files, dict) and set(files) == present
            and all(isinstance(s, list) and s == [(path / n).stat().st_size, crc_of(path / n)]
                    for n, s in files.items()))


class LexicalIndexes:
    """The BM25 index of the committed generation of one store and folder, for readers and writers."""

    def __init__(self, store: MetadataStore, folder: Path):
        self.store = store
        self.folder = Path(folder)
        self.loaded: LexicalIndex | None = None

    def current(self, generation: int, *, note: bool = True) -> LexicalIndex:
        """The index of ``generation``: the one already loaded, its saved folder, or built from
        the store. Call inside the read snapshot that saw ``generation``."""
        if self.loaded is not None and self.loaded.generation == generation:
            return self.loaded
        require()
        expected = self.store.passage_id_summary()
        path = self.folder / folder_name(generation)
        usable = path.is_dir() and self._recorded(path, generation)
        loaded = LexicalIndex.load(path, generation, expected) if usable else None
        if loaded is None:
            if note:
                log.info("no BM25 index saved for generation %d of %s; building it in memory (%d passages)",
                         generation, self.folder, expected[0])
            loaded = LexicalIndex.build(self.store, generation)
        self.loaded = loaded
        return loaded

    def _recorded(self, path: Path, generation: int) -> bool:
        """False when SQLite recorded another ``semsearch.json`` for this generation's folder (a folder
        of another index put here); True when it recorded none for it (an index from before, or a
        writer stopped between saving the folder and recording it)."""
        seal = self.store.get_info().get(SEAL)
        if not (isinstance(seal, list) and len(seal) == 2 and seal[0] == generation):
            return True
        try:
            return crc_of(Path(path) / META) == seal[1]
        except OSError:
            return False

    def refresh(self, enabled: bool) -> Path | None:
        """For the lock holder, after a write: save the committed generation's index when hybrid is
        ``enabled`` (unless saved already), and remove every other BM25 folder and leftover."""
        kept = None
        if enabled:
            with self.store.transaction(immediate=False):
                lexical = self.current(self.store.generation(), note=False)
            kept = self.folder / folder_name(lexical.generation)
            if not kept.is_dir():
                lexical.save(self.folder)
            seal = [lexical.generation, crc_of(kept / META)]
            if self.store.get_info().get(SEAL) != seal:
                with self.store.transaction():
                    self.store.set_info({SEAL: seal})
        for generation, path in bm25_folders(self.folder).items():
            if path != kept:
                shutil.rmtree(path, ignore_errors=True)
        for leftover in self.folder.glob(TEMPORARY_GLOB):
            shutil.rmtree(leftover, ignore_errors=True)
        return kept
