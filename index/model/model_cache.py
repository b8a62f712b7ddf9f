"""The model cache: exported ONNX graphs, known fingerprints and backend choices, per user.

Lives in ``$SEMSEARCH_CACHE`` (default ``$XDG_CACHE_HOME/semsearch`` or
``~/.cache/semsearch``), never inside a model's folder, and only while that
folder is the user's own and closed to others (0700; see ``cache_root``):

- ``graphs/<fingerprint>-l<layer>-t<max length>-<precision>-v<export version>/``:
  ``model.onnx``, the ``tokenizer.json`` it was verified with, and ``meta.json``
  (model facts, special tokens, the verification cosine, the graph's size
  and SHA-256). An entry whose graph does not match its recorded size and
  hash is removed and rebuilt, never used. The hash is computed again
  whenever the file's size, modification time or inode differ from those
  recorded at its last check (``verified.json``), so a query does not pay
  for hashing an unchanged file.
- ``models/<hash of the folder path>.json``: the weights fingerprint of a local
  model folder with the folder's ``model_files.signature`` and the
  transformers version it was computed with, so a query can check an index's
  recorded fingerprint without loading the model.
- ``models/<hash of the folder path>.direct.json`` and ``.tokenizer.json``: that the
  folder's model, built from its weight file without transformers
  (``direct``), gave transformers' vectors, with the tokenizer transformers
  made of it; valid under the same signature and version as the fingerprint.
- ``choices/<key>.json``: what ``--backend auto`` chose for bulk and for queries on this CPU,
  with the timings behind it (``auto``, ``choice``).

Every file is written to a temporary name and renamed, so readers see whole
entries or none.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from .model_files import signature

FINGERPRINT_ALGORITHM = 2  # of loading.model_fingerprint: a remembered fingerprint of another one is not used
EXPORT_VERSION = 2  # of the exported graph (onnx_export): bump when it changes, so old graphs are not used


_SAFE: dict[Path, Path] = {}  # the configured root -> the folder used (itself, or a private stand-in)


def configured_root() -> Path:
    if os.environ.get("SEMSEARCH_CACHE"):
        return Path(os.environ["SEMSEARCH_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "semsearch"


def cache_root() -> Path:
    """The cache folder, private to this user: made 0700 if missing, narrowed to 0700 if it is
    ours and wider. A folder owned by someone else (a shared or planted cache whose graphs and
    hashes another user could rewrite) is not used: this process caches in a private temporary
    folder instead, with a warning."""
    root = configured_root()
    if root not in _SAFE:
        _SAFE[root] = _private(root)
    return _SAFE[root]


def _private(root: Path) -> Path:
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        st = os.stat(root)
        if st.st_uid == os.geteuid():
            if st.st_mode & 0o077:
                os.chmod(root, 0o700)
            return root
        problem = f"it belongs to user id {st.st_uid}"
    except OSError as exc:
        problem = exc.strerror or str(exc)
    import tempfile

    stand_in = Path(tempfile.mkdtemp(prefix="semsearch-cache-"))  # 0700, ours, gone at reboot
    warnings.warn(f"the cache folder {root} is not used ({problem}); caching in {stand_in} for this "
                  "process instead (set SEMSEARCH_CACHE to a folder of your own)", stacklevel=3)
    return stand_in


def transformers_version() -> str | None:
    try:
        return metadata.version("transformers")
    except metadata.PackageNotFoundError:  # pragma: no cover - a declared dependency
        return None


def graph_key(fingerprint: str, layer_index: int, max_length: int, precision: str) -> str:
    return f"{fingerprint}-l{layer_index}-t{max_length}-{precision}-v{EXPORT_VERSION}"


@dataclass
class CachedGraph:
    folder: Path
    meta: dict[str, Any]

    @property
    def graph_file(self) -> Path:
        return self.folder / "model.onnx"

    @property
    def tokenizer_file(self) -> Path:
        return self.folder / "tokenizer.json"


def _stat_stamp(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino}


def load_graph(key: str) -> CachedGraph | None:
    """The cached graph for ``key``, or None (absent, or damaged: then it is removed)."""
    folder = cache_root() / "graphs" / key
    meta_file = folder / "meta.json"
    if not meta_file.is_file():
        return None
    graph_file, stamp_file = folder / "model.onnx", folder / "verified.json"
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        stamp = _stat_stamp(graph_file)
        whole = stamp["size"] == meta["graph_bytes"] and (folder / "tokenizer.json").is_file()
        checked = stamp_file.is_file() and json.loads(stamp_file.read_text(encoding="utf-8")) == stamp
        if whole and not checked:  # changed since its last check (or never checked): hash it
            whole = hashlib.sha256(graph_file.read_bytes()).hexdigest() == meta["graph_sha256"]
            if whole:
                write_json(stamp_file, stamp)
    except (OSError, ValueError, KeyError):
        whole = False
    if not whole:
        warnings.warn(f"the cached ONNX graph in {folder} is damaged; it is rebuilt", stacklevel=2)
        shutil.rmtree(folder, ignore_errors=True)
        return None
    return CachedGraph(folder, meta)


def store_graph(key: str, graph_file: Path, tokenizer_file: Path, meta: dict[str, Any]) -> CachedGraph:
    """Put a verified graph in the cache (atomically: a whole entry or none)."""
    root = cache_root() / "graphs"
    root.mkdir(parents=True, exist_ok=True)
    graph = Path(graph_file).read_bytes()
    meta = {**meta, "graph_bytes": len(graph), "graph_sha256": hashlib.sha256(graph).hexdigest()}
    staging = root / f".{key}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        (staging / "model.onnx").write_bytes(graph)
        shutil.copyfile(tokenizer_file, staging / "tokenizer.json")
        (staging / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        final = root / key
        stamp = _stat_stamp(staging / "model.onnx")  # rename keeps size, mtime and inode
        (staging / "verified.json").write_text(json.dumps(stamp), encoding="utf-8")
        shutil.rmtree(final, ignore_errors=True)  # a damaged or concurrent entry: ours replaces it
        os.replace(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _drop_older_versions(root, key)
    return CachedGraph(final, meta)


def _drop_older_versions(root: Path, key: str) -> None:
    """Remove the graphs an earlier export version made for the same model, layer, length and
    precision as ``key``: no version of semsearch with this one's export reads them again, and each
    can take tens of megabytes."""
    stem, _, version = key.rpartition("-v")
    for folder in root.glob(f"{stem}-v*"):
        old = folder.name.rpartition("-v")[2]
        if folder.is_dir() and old.isdigit() and int(old) < int(version):
            shutil.rmtree(folder, ignore_errors=True)


def _model_record(model_path: str) -> Path:
    digest = hashlib.sha256(str(Path(model_path).resolve()).encode()).hexdigest()[:24]
    return cache_root() / "models" / f"{digest}.json"


def known_fingerprint(model_path: str) -> str | None:
    """The fingerprint computed for this folder's files as they are now (same transformers), or None."""
    sig = signature(model_path)
    if sig is None:
        return None
    try:
        record = json.loads(_model_record(model_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (record.get("signature") != sig or record.get("transformers") != transformers_version()
            or record.get("algorithm") != FINGERPRINT_ALGORITHM):
        return None
    return record.get("fingerprint")


def remember_fingerprint(model_path: str, fingerprint: str) -> None:
    sig = signature(model_path)
    if sig is None:
        return
    write_json(_model_record(model_path), {"path": str(Path(model_path).resolve()), "signature": sig,
                                           "transformers": transformers_version(), "fingerprint": fingerprint,
                                           "algorithm": FINGERPRINT_ALGORITHM})


def remember_direct(model_path: str, fingerprint: str, tokenizer: Any, check: str, vectors: Any) -> None:
    """Record that ``direct.load`` reproduced transformers for this folder as it is now, with the
    tokenizer (``tokenizer.Tokenizer``) to run it with and, under ``check`` (layer, pooling, max
    length), transformers' fp32 vectors of the probe texts, which every direct load must give."""
    sig = signature(model_path)
    if sig is None:
        return
    record = _model_record(model_path)
    tokenizer_file = record.with_suffix(".tokenizer.json")
    known = direct_record(model_path)
    checks = dict(known.checks) if known is not None and known.fingerprint == fingerprint else {}
    checks[check] = [[float(x) for x in row] for row in vectors]
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        staging = tokenizer_file.with_name(f".{tokenizer_file.name}.tmp-{os.getpid()}")
        tokenizer.save(staging)
        os.replace(staging, tokenizer_file)
    except OSError:  # a cache that cannot be written only costs speed
        return
    write_json(record.with_suffix(".direct.json"), {
        "path": str(Path(model_path).resolve()), "signature": sig, "transformers": transformers_version(),
        "fingerprint": fingerprint, "algorithm": FINGERPRINT_ALGORITHM, "pad_id": tokenizer.pad_id,
        "tokenizer_sha256": hashlib.sha256(tokenizer_file.read_bytes()).hexdigest(), "checks": checks})


def forget_direct(model_path: str) -> None:
    """Drop the record: the direct build no longer gives transformers' vectors."""
    try:
        _model_record(model_path).with_suffix(".direct.json").unlink(missing_ok=True)
    except OSError:
        pass


@dataclass
class DirectRecord:
    fingerprint: str
    tokenizer_file: Path
    pad_id: int
    checks: dict[str, list[list[float]]]  # "l<layer>-<pooling>-t<max length>" -> probe vectors


def direct_record(model_path: str) -> DirectRecord | None:
    """What ``remember_direct`` recorded for this folder's files as they are now, or None."""
    sig = signature(model_path)
    if sig is None:
        return None
    record = _model_record(model_path)
    tokenizer_file = record.with_suffix(".tokenizer.json")
    try:
        meta = json.loads(record.with_suffix(".direct.json").read_text(encoding="utf-8"))
        if (meta.get("signature") != sig or meta.get("transformers") != transformers_version()
                or meta.get("algorithm") != FINGERPRINT_ALGORITHM or meta.get("fingerprint") != known_fingerprint(model_path)
                or hashlib.sha256(tokenizer_file.read_bytes()).hexdigest() != meta.get("tokenizer_sha256")):
            return None
        return DirectRecord(str(meta["fingerprint"]), tokenizer_file, int(meta["pad_id"]), dict(meta["checks"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load_choice(key: str) -> dict[str, Any] | None:
    try:
        return json.loads((cache_root() / "choices" / f"{key}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def store_choice(key: str, record: dict[str, Any]) -> None:
    write_json(cache_root() / "choices" / f"{key}.json", record)


def write_json(path: Path, value: Any) -> None:
    """Write JSON atomically; a cache that cannot be written only costs speed, so failures are ignored."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
        tmp.write_text(json.dumps(value, indent=1), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass
