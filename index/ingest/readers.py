"""Per-format document readers: JSONL, one-document-per-line, CSV/TSV tables and text files.

This module owns parsing, decoding and validating one open input: UTF-8
decoding (a BOM is accepted), the binary-file check, NUL removal and NFC
normalisation of ids and texts, the JSONL record and CSV/TSV header rules, and
the ``InputError`` messages that name the file and the line or byte offset.
Each reader yields ``(id, text, metadata)`` triples (``DocumentFields``), already
cleaned, with empty texts counted and left out; ``index.ingest.sources`` opens the
inputs and wraps the triples in ``Document``. The records a reader takes and
fills in (``ReadOptions``, passed as ``opts``, and its ``ReadReport``) live here.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import sys
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from ..errors import InputError


@dataclass
class ReadReport:
    """What was skipped while reading; filled in for the caller to print."""

    skipped_empty: int = 0
    skipped_invalid: int = 0
    skipped_links: int = 0  # symbolic links out of a folder being read (not followed by default)
    skipped_special: int = 0  # FIFOs, devices and sockets inside a folder being read
    duplicate_ids: list[str] = field(default_factory=list)  # filled in by the caller
    warnings: list[str] = field(default_factory=list)


@dataclass
class ReadOptions:
    """The reading options shared by the format readers in this module."""

    id_field: str | None
    text_field: str | None
    title_field: str | None
    strict: bool
    report: ReadReport
    max_document_bytes: int = 64 * 1024 * 1024  # one text file, or one JSONL/lines line
    follow_symlinks: bool = False  # in a folder: follow symbolic links that lead out of it


BINARY_SNIFF_BYTES = 8192
"""A file with a NUL byte among its first this-many bytes is treated as binary."""

_CHUNK_BYTES = 1 << 20

DocumentFields = tuple[str, str, dict]
"""``(id, text, metadata)`` of one document, as the readers yield it."""


def read_stream(f: BinaryIO | Iterable[bytes], name: str, fmt: str, text_id: str,
                line_id_prefix: str, opts: ReadOptions) -> Iterator[DocumentFields]:
    """Dispatch an open binary stream to the reader for ``fmt``.

    ``jsonl`` and ``lines`` accept any iterable of byte lines; ``csv``, ``tsv``
    and ``text`` need a seekable binary file.
    """
    if fmt in ("jsonl", "lines") and hasattr(f, "readline"):
        f = bounded_lines(f, name, opts.max_document_bytes)
    if fmt == "jsonl":
        yield from read_jsonl(f, name, opts)
    elif fmt == "lines":
        yield from read_lines(f, name, line_id_prefix, opts)
    elif fmt in ("csv", "tsv"):
        yield from read_table(f, name, fmt, opts)
    else:
        yield from read_text(f, name, text_id, opts)


# --- one reader per format ---------------------------------------------------------------


def read_jsonl(lines: Iterable[bytes], name: str, opts: ReadOptions) -> Iterator[DocumentFields]:
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


def _record_to_document(record: Any, where: str, opts: ReadOptions) -> DocumentFields | None:
    """Turn one parsed JSONL record into document fields (None when its text is empty)."""
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


def read_lines(lines: Iterable[bytes], name: str, id_prefix: str,
               opts: ReadOptions) -> Iterator[DocumentFields]:
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


def read_table(f: BinaryIO, name: str, fmt: str, opts: ReadOptions) -> Iterator[DocumentFields]:
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


def bounded_lines(f: BinaryIO, name: str, limit: int) -> Iterator[bytes]:
    """The lines of ``f``, none read past ``limit`` bytes: a line that long (a file with no line
    breaks, ``/dev/zero``) is an ``InputError`` instead of a process that fills its memory."""
    lineno = 0
    while True:
        raw = f.readline(limit + 1)
        if not raw:
            return
        lineno += 1
        if len(raw) > limit:
            raise InputError(f"{name}:{lineno}: a line is over the {limit / 2**20:g} MB limit for one document "
                             "(--max-document-mb)")
        yield raw


def read_text(f: BinaryIO, name: str, doc_id: str, opts: ReadOptions) -> Iterator[DocumentFields]:
    """Read a whole text file (at most ``opts.max_document_bytes``) as one document with id ``doc_id``."""
    data = f.read(opts.max_document_bytes + 1)
    if len(data) > opts.max_document_bytes:
        skip_invalid(f"{name}: over the {opts.max_document_bytes / 2**20:g} MB limit for one document "
                     "(--max-document-mb)", opts)
        return
    if b"\x00" in data[:BINARY_SNIFF_BYTES]:
        skip_invalid(f"{name}: binary file (contains NUL bytes)", opts)
        return
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        skip_invalid(f"{name}: invalid UTF-8 at byte {exc.start}", opts)
        return
    if text.startswith("\ufeff"):
        text = text[1:]
    doc = _finish(doc_id, text, None, {}, name, opts)
    if doc is not None:
        yield doc


# --- helpers -------------------------------------------------------------------------------


def skip_invalid(message: str, opts: ReadOptions) -> None:
    """Raise ``message`` when strict; otherwise count and record it as a skip."""
    if opts.strict:
        raise InputError(message)
    opts.report.skipped_invalid += 1
    opts.report.warnings.append(f"{message}; skipped")


def _clean(value: str) -> str:
    """Remove NUL characters, then normalise to NFC (in that order, so the result is NFC)."""
    return unicodedata.normalize("NFC", value.replace("\x00", ""))


def _finish(doc_id: str, text: str, title: str | None, metadata: dict, where: str,
            opts: ReadOptions) -> DocumentFields | None:
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
    return doc_id, text, metadata


def _decode_line(raw: bytes, name: str, lineno: int, offset: int,
                 opts: ReadOptions) -> str | None:
    """Decode one line starting at byte ``offset``; None when it is skipped as invalid."""
    bom = len(codecs.BOM_UTF8) if lineno == 1 and raw.startswith(codecs.BOM_UTF8) else 0
    try:
        return raw[bom:].decode("utf-8")
    except UnicodeDecodeError as exc:
        skip_invalid(f"{name}:{lineno}: invalid UTF-8 at byte {offset + bom + exc.start}", opts)
        return None


def _check_whole_file(f: BinaryIO, name: str, opts: ReadOptions) -> bool:
    """Check that the stream is UTF-8 text without reading it all into memory.

    Returns False (after a warning) or raises (when strict) for a binary file or
    invalid UTF-8; the error names the byte offset of the first bad byte.
    """
    chunk = f.read(BINARY_SNIFF_BYTES)
    if b"\x00" in chunk:
        skip_invalid(f"{name}: binary file (contains NUL bytes)", opts)
        return False
    decoder = codecs.getincrementaldecoder("utf-8")()
    position = 0  # bytes fed to the decoder so far
    while True:
        pending = len(decoder.getstate()[0])  # bytes of an unfinished character
        try:
            decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as exc:
            skip_invalid(f"{name}: invalid UTF-8 at byte {position - pending + exc.start}", opts)
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
