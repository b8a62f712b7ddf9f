"""Read documents to index from files, directories and standard input.

This module owns the public reading API (``read_documents``, ``read_texts``,
``Document``; ``ReadReport`` and ``ReadOptions`` come from ``readers``), the planning of sources (which
paths exist, which format each file has), standard input and directory walks.
The per-format parsing lives in ``index.ingest.readers``.

``read_documents`` turns a list of sources into a stream of ``Document``
objects. Supported inputs:

* JSONL / NDJSON in the BEIR layout (``_id``, ``title``, ``text``, ``metadata``);
* CSV and TSV with a header row (TSV is plain tab-separated text: no quoting);
* text files (``.txt``, ``.md``, ``.markdown``, ``.rst``): one document per file;
* directories, walked recursively in sorted order;
* standard input (``-``): JSONL when the first non-blank byte is ``{``,
  otherwise one document per non-empty line.

Every user mistake raises ``InputError`` with one line naming the file and the
line or byte offset. Input is decoded as UTF-8 (a BOM is accepted); ids and
texts are normalised to Unicode NFC and NUL characters are removed. Files that
are not valid UTF-8 or look binary are skipped with a warning in the
``ReadReport`` unless ``strict`` is set, in which case they are errors.
"""

from __future__ import annotations

import codecs
import itertools
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Union

from ..errors import InputError
from ..options import FORMATS
from .readers import (BINARY_SNIFF_BYTES, DocumentFields, ReadOptions, ReadReport, bounded_lines, read_stream,
                      skip_invalid)

__all__ = [
    "FORMATS", "EXTENSIONS", "STDIN_NAME", "STDIN_TEXT_ID", "BINARY_SNIFF_BYTES", "Source",
    "Document", "ReadReport", "ReadOptions", "read_documents", "read_texts",
]

EXTENSIONS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".txt": "text",
    ".md": "text",
    ".markdown": "text",
    ".rst": "text",
}

STDIN_NAME = "<stdin>"
"""How standard input is named in messages."""

STDIN_TEXT_ID = "-"
"""Document id of standard input read with ``format="text"``."""

_RECORD_SUFFIXES = (".jsonl", ".ndjson", ".csv", ".tsv", ".tab")
"""Extensions ``read_texts`` reads as documents with ids; any other file is read line by line."""

Source = Union[str, "os.PathLike[str]"]


@dataclass
class Document:
    """One document to index: a unique id, the text to embed, and metadata."""

    id: str
    text: str
    metadata: dict = field(default_factory=dict)


def read_documents(
    sources: Iterable[Source],
    *,
    id_field: str | None = None,
    text_field: str | None = None,
    title_field: str | None = "title",
    format: str | None = None,
    strict: bool = False,
    report: ReadReport | None = None,
    stdin: BinaryIO | None = None,
    max_document_bytes: int = ReadOptions.max_document_bytes,
    follow_symlinks: bool = False,
) -> Iterator[Document]:
    """Yield the documents of ``sources`` one at a time, in order.

    ``sources`` holds paths (files or directories) and ``"-"`` for ``stdin``
    (a binary file object, ``sys.stdin.buffer`` by default). ``format`` forces
    the format of files given directly and of standard input; files inside a
    directory are always chosen by extension. All given paths are checked
    before the first document is yielded. Skipped documents, lines and files
    are counted in ``report``.

    Inside a directory, symbolic links that lead out of it are not followed (unless
    ``follow_symlinks``), and FIFOs, devices and sockets are skipped: a folder cannot make the
    index read ``~/.ssh`` or hang on a pipe. A text file, or one line of JSONL or lines, over
    ``max_document_bytes`` is refused with one line.
    """
    if format is not None and format not in FORMATS:
        raise InputError(f"unknown format {format!r}; choose one of: {', '.join(FORMATS)}")
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    opts = ReadOptions(id_field or None, text_field or None, title_field or None, strict,
                       report if report is not None else ReadReport(), max_document_bytes, follow_symlinks)
    plan = [_plan_source(source, format) for source in sources]
    for kind, path, fmt in plan:
        if kind == "stdin":
            stream = stdin if stdin is not None else sys.stdin.buffer
            yield from _read_stdin(stream, fmt, opts)
        elif kind == "dir":
            yield from _read_directory(path, opts)
        else:
            with _open_binary(path) as f:
                yield from _documents(read_stream(f, path, fmt, path, f"{path}:", opts))


def read_texts(
    path: Source,
    *,
    id_field: str | None = None,
    text_field: str | None = None,
    format: str | None = None,
    strict: bool = False,
    report: ReadReport | None = None,
    stdin: BinaryIO | None = None,
) -> list[Document]:
    """Read the texts of one input to embed, in order (what ``semsearch embed --input`` reads).

    An explicit ``format`` wins. Otherwise ``"-"`` (standard input) and files
    that are not ``.jsonl``/``.ndjson``/``.csv``/``.tsv``/``.tab`` are read one
    text per non-blank line, and those extensions as documents with their ids.
    Read as lines, a document's id is its line number (``"1"``, ``"2"``, ...)
    for a file as for standard input. All documents are read before returning,
    so input errors are raised here; skips are counted in ``report``.
    """
    path = os.fspath(path)
    fmt = format or ("lines" if path == "-" or Path(path).suffix.lower() not in _RECORD_SUFFIXES
                     else None)
    docs = read_documents([path], id_field=id_field, text_field=text_field, format=fmt,
                          strict=strict, report=report, stdin=stdin)
    if fmt != "lines":
        return list(docs)
    # a line's id is "<path>:<line number>" in a file and "<line number>" on standard input;
    # (a directory given here is read by extension, its ids also cut after their last colon)
    return [Document(d.id.rsplit(":", 1)[-1], d.text, d.metadata) for d in docs]


def _documents(fields: Iterator[DocumentFields]) -> Iterator[Document]:
    """Wrap a reader's ``(id, text, metadata)`` triples in ``Document``.

    Closing this generator closes the reader at once, so the reader's cleanup
    runs before the caller closes the file under it.
    """
    with closing(fields):
        for doc_id, text, metadata in fields:
            yield Document(doc_id, text, metadata)


def _plan_source(source: Source, format: str | None) -> tuple[str, str, str | None]:
    """Check one source and return ``(kind, path, format)``; kind is stdin, dir or file."""
    path = os.fspath(source)
    if path == "-":
        return "stdin", path, format
    try:
        is_dir = os.path.isdir(path)
        os.stat(path)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file or directory") from None
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from None
    if is_dir:
        return "dir", path, None
    fmt = format or EXTENSIONS.get(os.path.splitext(path)[1].lower())
    if fmt is None:
        raise InputError(
            f"{path}: unknown file type; choose one with --format ({', '.join(FORMATS)})"
        )
    return "file", path, fmt


@contextmanager
def _open_binary(path: str) -> Iterator[BinaryIO]:
    """Open ``path`` for binary reading, turning OS errors into ``InputError``."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file or directory") from None
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from None
    with f:
        yield f


# --- standard input and directories ---------------------------------------------------


def _read_stdin(stream: BinaryIO, fmt: str | None, opts: ReadOptions) -> Iterator[Document]:
    """Read standard input, detecting JSONL vs. lines when no format is given."""
    if fmt in ("csv", "tsv", "text"):
        # These formats need a seekable file (validated before parsing): spool to disk.
        with tempfile.TemporaryFile() as tmp:
            shutil.copyfileobj(stream, tmp)
            tmp.seek(0)
            yield from _documents(read_stream(tmp, STDIN_NAME, fmt, STDIN_TEXT_ID, "", opts))
        return
    source = bounded_lines(stream, STDIN_NAME, opts.max_document_bytes) if hasattr(stream, "readline") else iter(stream)
    consumed: list[bytes] = []
    if fmt is None:
        fmt = "lines"
        for raw in source:
            consumed.append(raw)
            content = raw[len(codecs.BOM_UTF8):] if raw.startswith(codecs.BOM_UTF8) else raw
            content = content.strip()
            if content:
                fmt = "jsonl" if content.startswith(b"{") else "lines"
                break
    lines = itertools.chain(consumed, source)  # fmt is now "jsonl" or "lines"
    yield from _documents(read_stream(lines, STDIN_NAME, fmt, STDIN_TEXT_ID, "", opts))


def _read_directory(top: str, opts: ReadOptions) -> Iterator[Document]:
    """Read every document file under ``top``; text files get their relative path as id."""
    real_top = os.path.realpath(top)
    for rel, path, fmt in _walk_directory(top, opts):
        if not os.path.exists(path):
            skip_invalid(f"{path}: broken symbolic link", opts)
            continue
        if not opts.follow_symlinks and not _inside(os.path.realpath(path), real_top):
            opts.report.skipped_links += 1
            opts.report.warnings.append(f"{path}: a symbolic link out of {top}, not followed (--follow-symlinks)")
            continue
        if not stat.S_ISREG(os.stat(path).st_mode):
            opts.report.skipped_special += 1
            opts.report.warnings.append(f"{path}: not a regular file (a FIFO, device or socket), skipped")
            continue
        with _open_binary(path) as f:
            yield from _documents(read_stream(f, path, fmt, rel, f"{path}:", opts))


def _inside(real: str, real_top: str) -> bool:
    return real == real_top or real.startswith(real_top.rstrip(os.sep) + os.sep)


def _walk_directory(top: str, opts: ReadOptions) -> list[tuple[str, str, str]]:
    """List ``(relative posix path, path, format)`` of document files under ``top``, sorted.

    Hidden files and directories (names starting with ``.``) and files with other
    extensions are ignored. Symbolic links to directories are followed once:
    a directory whose real path was already visited is not entered again, so
    link loops terminate.
    """

    def on_error(exc: OSError) -> None:
        if isinstance(exc, PermissionError):
            raise InputError(f"{exc.filename}: permission denied")
        raise InputError(f"{exc.filename}: {exc.strerror or exc}")

    real_top = os.path.realpath(top)
    visited = {real_top}
    found: list[tuple[str, str, str]] = []
    for root, dirnames, filenames in os.walk(top, onerror=on_error, followlinks=True):
        kept = []
        for name in sorted(dirnames):
            real = os.path.realpath(os.path.join(root, name))
            if name.startswith(".") or real in visited:
                continue
            if not opts.follow_symlinks and not _inside(real, real_top):
                opts.report.skipped_links += 1
                opts.report.warnings.append(f"{os.path.join(root, name)}: a symbolic link out of {top}, not followed "
                                            "(--follow-symlinks)")
                continue
            visited.add(real)
            kept.append(name)
        dirnames[:] = kept
        for name in filenames:
            fmt = EXTENSIONS.get(os.path.splitext(name)[1].lower())
            if name.startswith(".") or fmt is None:
                continue
            path = os.path.join(root, name)
            found.append((Path(os.path.relpath(path, top)).as_posix(), path, fmt))
    found.sort()
    return found
