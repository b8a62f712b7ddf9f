"""Read documents to index from files, directories and standard input.

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
import csv
import io
import itertools
import json
import os
import shutil
import sys
import tempfile
import unicodedata
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Union

from .errors import InputError

FORMATS = ("jsonl", "csv", "tsv", "text", "lines")

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

BINARY_SNIFF_BYTES = 8192
"""A file with a NUL byte among its first this-many bytes is treated as binary."""

_CHUNK_BYTES = 1 << 20

Source = Union[str, "os.PathLike[str]"]


@dataclass
class Document:
    """One document to index: a unique id, the text to embed, and metadata."""

    id: str
    text: str
    metadata: dict = field(default_factory=dict)


@dataclass
class ReadReport:
    """What was skipped while reading; filled in for the caller to print."""

    skipped_empty: int = 0
    skipped_invalid: int = 0
    duplicate_ids: list[str] = field(default_factory=list)  # filled in by the caller
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Options:
    """The reading options shared by the format readers."""

    id_field: str | None
    text_field: str | None
    title_field: str | None
    strict: bool
    report: ReadReport


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
) -> Iterator[Document]:
    """Yield the documents of ``sources`` one at a time, in order.

    ``sources`` holds paths (files or directories) and ``"-"`` for ``stdin``
    (a binary file object, ``sys.stdin.buffer`` by default). ``format`` forces
    the format of files given directly and of standard input; files inside a
    directory are always chosen by extension. All given paths are checked
    before the first document is yielded. Skipped documents, lines and files
    are counted in ``report``.
    """
    if format is not None and format not in FORMATS:
        raise InputError(f"unknown format {format!r}; choose one of: {', '.join(FORMATS)}")
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    opts = _Options(id_field or None, text_field or None, title_field or None, strict,
                    report if report is not None else ReadReport())
    plan = [_plan_source(source, format) for source in sources]
    for kind, path, fmt in plan:
        if kind == "stdin":
            stream = stdin if stdin is not None else sys.stdin.buffer
            yield from _read_stdin(stream, fmt, opts)
        elif kind == "dir":
            yield from _read_directory(path, opts)
        else:
            with _open_binary(path) as f:
                yield from _read_stream(f, path, fmt, path, f"{path}:", opts)


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


def _read_stream(f: BinaryIO, name: str, fmt: str, text_id: str, line_id_prefix: str,
                 opts: _Options) -> Iterator[Document]:
    """Dispatch an open binary stream to the reader for ``fmt``."""
    if fmt == "jsonl":
        yield from _read_jsonl(f, name, opts)
    elif fmt == "lines":
        yield from _read_lines(f, name, line_id_prefix, opts)
    elif fmt in ("csv", "tsv"):
        yield from _read_table(f, name, fmt, opts)
    else:
        yield from _read_text(f, name, text_id, opts)


# --- standard input and directories ---------------------------------------------------


def _read_stdin(stream: BinaryIO, fmt: str | None, opts: _Options) -> Iterator[Document]:
    """Read standard input, detecting JSONL vs. lines when no format is given."""
    if fmt in ("csv", "tsv", "text"):
        # These formats need a seekable file (validated before parsing): spool to disk.
        with tempfile.TemporaryFile() as tmp:
            shutil.copyfileobj(stream, tmp)
            tmp.seek(0)
            yield from _read_stream(tmp, STDIN_NAME, fmt, STDIN_TEXT_ID, "", opts)
        return
    consumed: list[bytes] = []
    if fmt is None:
        fmt = "lines"
        for raw in stream:
            consumed.append(raw)
            content = raw[len(codecs.BOM_UTF8):] if raw.startswith(codecs.BOM_UTF8) else raw
            content = content.strip()
            if content:
                fmt = "jsonl" if content.startswith(b"{") else "lines"
                break
    lines = itertools.chain(consumed, stream)
    if fmt == "jsonl":
        yield from _read_jsonl(lines, STDIN_NAME, opts)
    else:
        yield from _read_lines(lines, STDIN_NAME, "", opts)


def _read_directory(top: str, opts: _Options) -> Iterator[Document]:
    """Read every document file under ``top``; text files get their relative path as id."""
    for rel, path, fmt in _walk_directory(top):
        if not os.path.exists(path):
            _skip_invalid(f"{path}: broken symbolic link", opts)
            continue
        with _open_binary(path) as f:
            yield from _read_stream(f, path, fmt, rel, f"{path}:", opts)


def _walk_directory(top: str) -> list[tuple[str, str, str]]:
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

    visited = {os.path.realpath(top)}
    found: list[tuple[str, str, str]] = []
    for root, dirnames, filenames in os.walk(top, onerror=on_error, followlinks=True):
        kept = []
        for name in sorted(dirnames):
            real = os.path.realpath(os.path.join(root, name))
            if name.startswith(".") or real in visited:
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


# --- one reader per format ---------------------------------------------------------------


def _read_jsonl(lines: Iterable[bytes], name: str, opts: _Options) -> Iterator[Document]:
    """Read JSON Lines: one object per line, blank lines skipped; an empty file is reported."""
    offset = 0
    records = 0
    for lineno, raw in enumerate(lines, start=1):
        line = _decode_line(raw, name, lineno, offset, opts)
        offset += len(raw)
        if line is None or not line.strip():
            continue
        try:
            record = json.loads(line.replace("\x00", ""), strict=False)
        except RecursionError:
            raise InputError(f"{name}:{lineno}: not valid JSON (nested too deeply)") from None
        except ValueError as exc:
            reason = (f"{exc.msg} at column {exc.colno}"
                      if isinstance(exc, json.JSONDecodeError) else str(exc))
            raise InputError(f"{name}:{lineno}: not valid JSON ({reason})") from None
        records += 1
        doc = _record_to_document(record, f"{name}:{lineno}", opts)
        if doc is not None:
            yield doc
    if records == 0 and opts.report is not None:
        opts.report.warnings.append(f"{name}: empty file, no documents")


def _record_to_document(record: Any, where: str, opts: _Options) -> Document | None:
    """Turn one parsed JSONL record into a ``Document`` (None when its text is empty)."""
    if not isinstance(record, dict):
        raise InputError(f"{where}: expected a JSON object, found {_json_type(record)}")
    fields = ", ".join(list(record)[:20]) or "none"
    id_key = opts.id_field or ("_id" if "_id" in record else "id")
    if id_key not in record:
        wanted = f"'{opts.id_field}'" if opts.id_field else "'_id' or 'id'"
        raise InputError(
            f"{where}: no field {wanted} (fields: {fields}); choose the id field with --id-field"
        )
    text_key = opts.text_field or "text"
    if text_key not in record:
        raise InputError(
            f"{where}: no field '{text_key}' (fields: {fields}); "
            f"choose the text field with --text-field"
        )
    doc_id = record[id_key]
    if isinstance(doc_id, bool) or not isinstance(doc_id, (str, int, float)):
        raise InputError(
            f"{where}: field '{id_key}' must be a string or a number, found {_json_type(doc_id)}"
        )
    text = record[text_key]
    if not isinstance(text, str):
        raise InputError(f"{where}: field '{text_key}' must be a string, found {_json_type(text)}")
    title_key = opts.title_field
    title = None
    if title_key and title_key in record and title_key not in (id_key, text_key):
        title = record[title_key]
        if title is not None and not isinstance(title, str):
            raise InputError(
                f"{where}: field '{title_key}' must be a string, found {_json_type(title)}"
            )
    metadata = {k: v for k, v in record.items()
                if k not in (id_key, text_key, title_key, "metadata")}
    extra = record.get("metadata") if id_key != "metadata" and text_key != "metadata" else None
    if extra is not None:
        if not isinstance(extra, dict):
            raise InputError(f"{where}: field 'metadata' must be an object, found {_json_type(extra)}")
        metadata.update(extra)
    return _finish(str(doc_id), text, title, metadata, where, opts)


def _read_lines(lines: Iterable[bytes], name: str, id_prefix: str,
                opts: _Options) -> Iterator[Document]:
    """One document per non-blank line; its id is ``id_prefix`` + the line number."""
    offset = 0
    for lineno, raw in enumerate(lines, start=1):
        line = _decode_line(raw, name, lineno, offset, opts)
        offset += len(raw)
        if line is None:
            continue
        text = line.rstrip("\r\n")
        if not _clean(text).strip():
            continue  # blank lines separate documents; they are not documents
        doc = _finish(f"{id_prefix}{lineno}", text, None, {}, f"{name}:{lineno}", opts)
        if doc is not None:
            yield doc


def _read_table(f: BinaryIO, name: str, fmt: str, opts: _Options) -> Iterator[Document]:
    """Read CSV or TSV with a header row; columns other than id/text/title become metadata."""
    if not _check_whole_file(f, name, opts):
        return
    f.seek(0)
    _raise_csv_field_limit()
    text_stream = io.TextIOWrapper(f, encoding="utf-8-sig", newline="")
    try:
        lines = (line.replace("\x00", "") for line in text_stream)
        if fmt == "tsv":
            reader = csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
        else:
            reader = csv.reader(lines)
        rows = _csv_rows(reader, name)
        first = next(rows, None)
        if first is None:
            raise InputError(f"{name}: empty file")
        header = [column.strip() for column in first[1]]
        _check_header(header, name)
        id_col = _pick_column(header, [opts.id_field] if opts.id_field else ["_id", "id"],
                              name, "--id-field")
        text_col = _pick_column(header, [opts.text_field or "text"], name, "--text-field")
        title_col = (header.index(opts.title_field)
                     if opts.title_field in header and opts.title_field not in
                     (header[id_col], header[text_col]) else None)
        for lineno, row in rows:
            if len(row) != len(header):
                raise InputError(
                    f"{name}:{lineno}: expected {len(header)} fields as in the header, "
                    f"found {len(row)}"
                )
            metadata = {column: value for i, (column, value) in enumerate(zip(header, row))
                        if i not in (id_col, text_col, title_col)}
            title = row[title_col] if title_col is not None else None
            doc = _finish(row[id_col], row[text_col], title, metadata, f"{name}:{lineno}", opts)
            if doc is not None:
                yield doc
    finally:
        text_stream.detach()  # the caller owns (and closes) the binary file


def _read_text(f: BinaryIO, name: str, doc_id: str, opts: _Options) -> Iterator[Document]:
    """Read a whole text file as one document with id ``doc_id``."""
    data = f.read()
    if b"\x00" in data[:BINARY_SNIFF_BYTES]:
        _skip_invalid(f"{name}: binary file (contains NUL bytes)", opts)
        return
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        _skip_invalid(f"{name}: invalid UTF-8 at byte {exc.start}", opts)
        return
    if text.startswith("\ufeff"):
        text = text[1:]
    doc = _finish(doc_id, text, None, {}, name, opts)
    if doc is not None:
        yield doc


# --- helpers -------------------------------------------------------------------------------


def _clean(value: str) -> str:
    """Remove NUL characters, then normalise to NFC (in that order, so the result is NFC)."""
    return unicodedata.normalize("NFC", value.replace("\x00", ""))


def _finish(doc_id: str, text: str, title: str | None, metadata: dict, where: str,
            opts: _Options) -> Document | None:
    """Clean id, title and text, join a non-empty title before the text, skip empty texts."""
    doc_id = _clean(doc_id)
    if not doc_id:
        raise InputError(f"{where}: empty id")
    text = _clean(text)
    if title is not None:
        title = _clean(title)
        if title.strip():
            metadata["title"] = title
            text = f"{title} {text}" if text.strip() else title
    if not text.strip():
        opts.report.skipped_empty += 1
        opts.report.warnings.append(f"{where}: document '{doc_id}' has no text; skipped")
        return None
    return Document(doc_id, text, metadata)


def _skip_invalid(message: str, opts: _Options) -> None:
    """Raise ``message`` when strict; otherwise count and record it as a skip."""
    if opts.strict:
        raise InputError(message)
    opts.report.skipped_invalid += 1
    opts.report.warnings.append(f"{message}; skipped")


def _decode_line(raw: bytes, name: str, lineno: int, offset: int,
                 opts: _Options) -> str | None:
    """Decode one line starting at byte ``offset``; None when it is skipped as invalid."""
    bom = len(codecs.BOM_UTF8) if lineno == 1 and raw.startswith(codecs.BOM_UTF8) else 0
    try:
        return raw[bom:].decode("utf-8")
    except UnicodeDecodeError as exc:
        _skip_invalid(f"{name}:{lineno}: invalid UTF-8 at byte {offset + bom + exc.start}", opts)
        return None


def _check_whole_file(f: BinaryIO, name: str, opts: _Options) -> bool:
    """Check that the stream is UTF-8 text without reading it all into memory.

    Returns False (after a warning) or raises (when strict) for a binary file or
    invalid UTF-8; the error names the byte offset of the first bad byte.
    """
    chunk = f.read(BINARY_SNIFF_BYTES)
    if b"\x00" in chunk:
        _skip_invalid(f"{name}: binary file (contains NUL bytes)", opts)
        return False
    decoder = codecs.getincrementaldecoder("utf-8")()
    position = 0  # bytes fed to the decoder so far
    while True:
        pending = len(decoder.getstate()[0])  # bytes of an unfinished character
        try:
            decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as exc:
            _skip_invalid(f"{name}: invalid UTF-8 at byte {position - pending + exc.start}", opts)
            return False
        if not chunk:
            return True
        position += len(chunk)
        chunk = f.read(_CHUNK_BYTES)


def _csv_rows(reader: Any, name: str) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line number, row)`` for non-blank rows, turning csv errors into InputError."""
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise InputError(f"{name}:{reader.line_num}: {exc}") from None
        if row:
            yield reader.line_num, row


def _check_header(header: list[str], name: str) -> None:
    """Reject a header that names a column twice."""
    seen: set[str] = set()
    for column in header:
        if column in seen:
            raise InputError(f"{name}: column '{column}' appears twice in the header")
        seen.add(column)


def _pick_column(header: list[str], candidates: list[str], name: str, option: str) -> int:
    """Index of the first candidate column present in ``header``, else InputError."""
    for candidate in candidates:
        if candidate in header:
            return header.index(candidate)
    wanted = " or ".join(f"'{c}'" for c in candidates)
    raise InputError(
        f"{name}: no column {wanted} in the header (columns: {', '.join(header)}); "
        f"choose one with {option}"
    )


def _raise_csv_field_limit() -> None:
    """Allow fields of any size (the csv default is 128 KiB)."""
    limit = sys.maxsize
    while True:
        try:
            csv.field_size_limit(limit)
            return
        except OverflowError:  # platforms where a C long is 32 bits
            limit //= 2


def _json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
