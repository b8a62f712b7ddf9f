"""``ivf-disk``: IVF whose inverted lists stay on disk (FAISS ``OnDiskInvertedLists``), for vector
indexes larger than memory.

Files: ``vectors-<g>.faiss`` holds the coarse quantizer and where each list lies (a few MB);
``vectors-<g>.ivfdata`` holds the vectors and ids, list by list, and is memory-mapped read-only.
A search reads only the lists it probes, so the process holds the quantizer and the list offsets,
not the vectors; the operating system's page cache keeps the lists in use (memory it can take
back), and a cold list costs a disk read.

Built by merging shards, as FAISS's ``contrib.ondisk``: the quantizer is trained on a sample, the
vectors are added ``SHARD`` at a time to in-memory IVF shards written to temporary files, and the
shards are merged list by list into the ``.ivfdata`` file. Building needs memory for one shard,
not for the index.

A mapped base is shared by every reader and never changed. What later commits changed (their
delta files, ``index.storage.deltas``) is held in memory: added vectors go to an in-memory IVF overlay
with the same quantizer, ids removed from the base are filtered out of its results, and a search
merges the two. The writer compacts base and overlay into a new base when the deltas outgrow
``delta_ratio`` of the base or ``max_delta_bytes``, whichever comes first, so the memory a reader
needs for them is bounded too.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import shutil
import sys
import tempfile
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import faiss
import numpy as np

from ..errors import IndexCorruptError, SemsearchError
from ..files import fsync_dir, fsync_file, write_atomically
from .base import DATA_SUFFIX, Batches, SearchSettings, StoredIds, VectorIndex, search_threads
from .ivf import IVFIndex, default_nprobe, list_ids, n_lists, nprobe_ladder, training_sample

SHARD = 100_000  # vectors per in-memory shard while building (about 150 MB at 384-d)
_names = itertools.count()


def data_file(path: Path) -> Path:
    """The ``.ivfdata`` file that belongs to the base file ``path``."""
    return Path(path).with_suffix(DATA_SUFFIX)


@contextmanager
def native_stdout_silenced() -> Iterator[None]:
    """FAISS's on-disk lists print "resizing <file> to <n> bytes" with C's ``printf`` while they
    grow; keep that out of the command's own output (a table, a JSON line).

    Only C's ``stdout`` stream is pointed at ``/dev/null`` meanwhile, never file descriptor 1:
    Python writes through the descriptor (its own buffers), so another thread's ``print`` in a
    threaded host (``semsearch serve``) still reaches standard output whole. Where the C library
    cannot be reached this way, the message is simply let through."""
    try:
        libc = ctypes.CDLL(None)
        stream = ctypes.c_void_p.in_dll(libc, "stdout")
        libc.fopen.restype, libc.fopen.argtypes = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_char_p]
        libc.fflush.argtypes = libc.fclose.argtypes = [ctypes.c_void_p]
        sink = libc.fopen(os.devnull.encode(), b"w")
    except (OSError, ValueError, AttributeError):  # pragma: no cover - no such C library here
        sink = None
    if not sink:
        yield
        return
    saved = stream.value
    libc.fflush(saved)
    stream.value = sink
    try:
        yield
    finally:
        libc.fflush(sink)
        stream.value = saved
        libc.fclose(sink)


def _windows(batches: Iterator[tuple[np.ndarray, np.ndarray]], size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Regroup streamed ``(ids, vectors)`` batches into pieces of about ``size`` vectors."""
    ids, vecs, have = [], [], 0
    for i, v in batches:
        ids.append(np.asarray(i, dtype=np.int64))
        vecs.append(np.ascontiguousarray(v, dtype=np.float32))
        have += len(i)
        if have >= size:
            yield np.concatenate(ids), np.concatenate(vecs)
            ids, vecs, have = [], [], 0
    if have:
        yield np.concatenate(ids), np.concatenate(vecs)


def _empty_like(ivf: faiss.IndexIVFFlat) -> faiss.IndexIVFFlat:
    """An empty in-memory IVF with a copy of ``ivf``'s quantizer (so vectors land in the same lists)."""
    quantizer = faiss.clone_index(ivf.quantizer)
    out = faiss.IndexIVFFlat(quantizer, ivf.d, ivf.nlist, faiss.METRIC_INNER_PRODUCT)
    out.nprobe = ivf.nprobe
    return out


def _merged(trained: faiss.IndexIVFFlat, sources: list, path: Path) -> faiss.IndexIVFFlat:
    """A new index with ``trained``'s quantizer whose lists are the ``sources`` inverted lists merged
    into one on-disk file at ``path``."""
    index = _empty_like(trained)
    lists = faiss.OnDiskInvertedLists(index.nlist, index.code_size, str(path))
    pointers = faiss.InvertedListsPtrVector()
    for source in sources:
        pointers.push_back(source)
    try:
        with native_stdout_silenced():
            n = lists.merge_from_multiple(pointers.data(), pointers.size(), False)
    except RuntimeError as exc:  # FAISS reports a full disk (a failed ftruncate or mmap) this way
        raise SemsearchError(f"cannot write {path}: {str(exc).strip().splitlines()[-1]}") from None
    index.replace_invlists(lists, True)
    lists.this.disown()  # the index owns it now
    index.ntotal = n
    return index


def _remove_file(path: Path | None) -> None:
    if path is not None:
        Path(path).unlink(missing_ok=True)


class IVFDiskIndex(VectorIndex):
    kind = "ivf-disk"
    min_training = IVFIndex.min_training
    delta_ratio = 0.5
    max_delta_bytes = 1 << 30  # at most this much of later commits is held in memory over a base

    def __init__(self, index: faiss.Index, scratch: Path | None = None):
        super().__init__(index)
        self.overlay = _empty_like(self.inner)
        self.removed = np.empty(0, dtype=np.int64)  # base ids removed since the base (sorted)
        self._base_ids: np.ndarray | None = None
        self._scratch_cleanup = None
        self._set_scratch(scratch)

    def _set_scratch(self, scratch: Path | None) -> None:
        """``scratch``: a data file this process built that no committed state uses yet (it is
        removed with this object unless ``save`` puts it in place)."""
        if self._scratch_cleanup is not None:
            self._scratch_cleanup.detach()
        self.scratch = scratch
        self._scratch_cleanup = weakref.finalize(self, _remove_file, scratch) if scratch else None

    # --- construction -------------------------------------------------------------------
    @classmethod
    def build(cls, dimension: int, n: int, batches: Batches, seed: int = 0,
              workdir: Path | None = None) -> "IVFDiskIndex":
        nlist = n_lists(n)
        trained = faiss.IndexIVFFlat(faiss.IndexFlatIP(dimension), dimension, nlist, faiss.METRIC_INNER_PRODUCT)
        trained.train(training_sample(batches, n, max(64 * nlist, 256 * 64), seed))
        trained.nprobe = default_nprobe(nlist)
        own_dir = workdir is None
        folder = Path(tempfile.mkdtemp(prefix="semsearch-ivf-disk-")) if own_dir else Path(workdir)
        pid = os.getpid()
        shards: list[Path] = []
        try:
            for ids, vecs in _windows(batches(), SHARD):
                shard = faiss.clone_index(trained)
                shard.add_with_ids(vecs, ids)
                shards.append(folder / f".vectors-shard-{pid}-{next(_names)}.tmp-{pid}")
                faiss.write_index(shard, str(shards[-1]))
                del shard
            mapped = [faiss.read_index(str(p), faiss.IO_FLAG_MMAP) for p in shards]
            data = folder / f".vectors-build-{pid}-{next(_names)}{DATA_SUFFIX}.tmp-{pid}"
            index = _merged(trained, [faiss.extract_index_ivf(m).invlists for m in mapped], data)
            del mapped
        finally:
            for p in shards:
                p.unlink(missing_ok=True)
        out = cls(index, scratch=data)
        if own_dir:
            weakref.finalize(out, shutil.rmtree, folder, True)
        return out

    @classmethod
    def owns(cls, index: faiss.Index) -> bool:
        ivf = faiss.try_extract_index_ivf(index)
        return ivf is not None and isinstance(faiss.downcast_InvertedLists(ivf.invlists), faiss.OnDiskInvertedLists)

    @classmethod
    def open_file(cls, path: Path) -> "IVFDiskIndex | None":
        """The base at ``path`` with its ``.ivfdata`` file mapped read-only (None: not this type)."""
        data = data_file(path)
        if not data.is_file():
            return None
        index = faiss.read_index(str(path), faiss.IO_FLAG_SKIP_IVF_DATA | faiss.IO_FLAG_READ_ONLY)
        if not cls.owns(index):
            return None
        lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(index).invlists)
        if data.stat().st_size < lists.totsize:
            raise IndexCorruptError(f"{data}: the on-disk lists are truncated ({data.stat().st_size} of "
                                    f"{lists.totsize} bytes); run `semsearch index repair`")
        lists.filename = str(data)
        lists.do_mmap()
        return cls(index)

    # --- properties ---------------------------------------------------------------------
    @property
    def inner(self) -> faiss.IndexIVFFlat:
        return faiss.extract_index_ivf(self.index)

    @property
    def lists(self) -> faiss.OnDiskInvertedLists:
        return faiss.downcast_InvertedLists(self.inner.invlists)

    @property
    def nlist(self) -> int:
        return int(self.inner.nlist)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal) - len(self.removed) + int(self.overlay.ntotal)

    def describe(self) -> str:
        return f"{self.kind} ({self.nlist} lists)"

    def base_ids(self) -> np.ndarray:
        """The ids in the base file, sorted (read once from the mapped lists: 8 bytes a vector)."""
        if self._base_ids is None:
            self._base_ids = np.sort(list_ids(self.inner.invlists))
        return self._base_ids

    def agrees_with(self, stored: StoredIds) -> bool:
        """Count and id sum against the store's, streamed over the mapped lists (no id array kept)."""
        if self.ntotal != stored.count:
            return False
        base_sum = _list_id_sum(self.inner.invlists)
        overlay_sum = int(list_ids(self.overlay.invlists).sum())
        return base_sum - int(self.removed.sum()) + overlay_sum == stored.id_sum

    def stored_ids(self) -> np.ndarray:
        live = np.setdiff1d(self.base_ids(), self.removed, assume_unique=True)
        return np.concatenate([live, list_ids(self.overlay.invlists)])

    def needs_rebuild(self, n: int) -> bool:
        return n_lists(n) > 2 * self.nlist

    def tuning_ladder(self) -> list[SearchSettings]:
        return [SearchSettings(nprobe=n) for n in nprobe_ladder(self.nlist)]

    def compaction_due(self, delta_bytes: int, base_bytes: int) -> bool:
        return delta_bytes > min(self.delta_ratio * base_bytes, self.max_delta_bytes)

    # --- updates: into the overlay, never into the mapped base ----------------------------------
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            self.overlay.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32),
                                      np.asarray(ids, dtype=np.int64))

    def remove(self, ids) -> int:
        ids = np.unique(np.asarray(list(ids), dtype=np.int64))
        if not len(ids):
            return 0
        gone = int(self.overlay.remove_ids(faiss.IDSelectorBatch(ids))) if self.overlay.ntotal else 0
        base = self.base_ids()
        in_base = ids[np.isin(ids, base, assume_unique=True)]
        new = np.setdiff1d(in_base, self.removed, assume_unique=True)
        if len(new):
            self.removed = np.union1d(self.removed, new)
        return gone + len(new)

    # --- search ----------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None,
               settings: SearchSettings | None = None) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = max(1, min(k, self.ntotal if allowed is None else len(allowed)))
        nprobe = (settings or SearchSettings()).nprobe or int(self.inner.nprobe)
        parts = []
        with search_threads(len(queries)):
            selector = self._base_selector(allowed)
            if self.index.ntotal and selector is not False:
                params = faiss.SearchParametersIVF(nprobe=nprobe)
                if selector is not None:
                    params.sel = selector
                parts.append(self.index.search(queries, k, params=params))
            if self.overlay.ntotal:
                params = faiss.SearchParametersIVF(nprobe=nprobe)
                keep = None if allowed is None else faiss.IDSelectorBatch(np.asarray(allowed, dtype=np.int64))
                if keep is not None:
                    params.sel = keep
                parts.append(self.overlay.search(queries, k, params=params))
        if not parts:
            return np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), -1, np.int64)
        scores = np.concatenate([s for s, _ in parts], axis=1)
        ids = np.concatenate([i for _, i in parts], axis=1)
        scores = np.where(ids < 0, -np.inf, scores)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)

    def _base_selector(self, allowed: np.ndarray | None):
        """The base's filter: the allowed ids not removed (False: none left), or every id not removed."""
        if allowed is not None:
            keep = np.setdiff1d(np.asarray(allowed, dtype=np.int64), self.removed)
            return faiss.IDSelectorBatch(keep) if len(keep) else False
        if not len(self.removed):
            return None
        inner = faiss.IDSelectorBatch(self.removed)
        selector = faiss.IDSelectorNot(inner)
        selector.referenced = inner  # kept alive with the selector
        return selector

    # --- files -----------------------------------------------------------------------------
    def save(self, path: Path) -> Path:
        """Write the base of ``path``: its ``.ivfdata`` (the merged base and overlay, without the removed
        ids, or the file this process built, moved into place) and then the small ``.faiss`` file."""
        path = Path(path)
        data = data_file(path)
        pending = self.overlay.ntotal or len(self.removed)
        if self.scratch is not None and not pending and self.scratch.parent == path.parent:
            fsync_file(self.scratch)
            os.replace(self.scratch, data)
            fsync_dir(path.parent)
            self.lists.filename = str(data)
            self._set_scratch(None)
        else:
            merged = []

            def write(tmp: Path) -> None:
                index = _merged(self.inner, [self.inner.invlists, self.overlay.invlists], tmp)
                if len(self.removed):
                    with native_stdout_silenced():
                        index.remove_ids(faiss.IDSelectorBatch(self.removed))
                fsync_file(tmp)
                merged.append(index)

            write_atomically(data, write)
            (index,) = merged
            faiss.downcast_InvertedLists(index.invlists).filename = str(data)
            old_scratch = self.scratch
            self.index, self.overlay = index, _empty_like(index)
            self.removed, self._base_ids = np.empty(0, dtype=np.int64), None
            self._set_scratch(None)
            _remove_file(old_scratch)
        lists = self.lists
        lists.filename = data.name  # the header names its data file; readers find it next to the header
        try:
            return super().save(path)
        finally:
            lists.filename = str(data)


def _list_id_sum(invlists) -> int:
    """The sum of every id in a FAISS ``InvertedLists``, one list at a time."""
    total = 0
    for i in range(invlists.nlist):
        size = invlists.list_size(i)
        if size:
            total += int(faiss.rev_swig_ptr(invlists.get_ids(i), size).sum(dtype=np.int64))
    return total

