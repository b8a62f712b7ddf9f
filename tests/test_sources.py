"""Tests for index.ingest.sources: reading documents from JSONL, CSV/TSV, text, directories, stdin."""

from __future__ import annotations

import io
import json
import os
import tempfile
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from index.errors import InputError
from index.ingest import sources
from index.ingest.sources import Document, ReadReport, read_documents, read_texts

KOREAN = "배를 타고 바다로 갔다"
KOREAN_NFD = unicodedata.normalize("NFD", KOREAN)


def read(*srcs, **kwargs) -> list[Document]:
    """All documents of ``srcs`` as a list."""
    return list(read_documents([str(s) for s in srcs], **kwargs))


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
                    encoding="utf-8")
    return path


# --- JSONL -------------------------------------------------------------------------------


def test_beir_jsonl_with_title_and_metadata(tmp_path):
    path = write_jsonl(tmp_path / "corpus.jsonl", [
        {"_id": "d1", "title": "Boats", "text": "We went to sea.",
         "metadata": {"url": "http://x", "year": 2020}, "lang": "en"},
        {"_id": "d2", "title": "", "text": "No title here."},
        {"_id": "d3", "text": "Only text.", "metadata": {}},
    ])
    assert read(path) == [
        Document("d1", "Boats We went to sea.",
                 {"lang": "en", "url": "http://x", "year": 2020, "title": "Boats"}),
        Document("d2", "No title here.", {}),
        Document("d3", "Only text.", {}),
    ]


def test_jsonl_id_fallback_numeric_ids_and_id_precedence(tmp_path):
    path = write_jsonl(tmp_path / "c.ndjson", [
        {"id": 7, "text": "seven"},
        {"id": 2.5, "text": "two and a half"},
        {"_id": "a", "id": "b", "text": "both"},
    ])
    assert read(path) == [
        Document("7", "seven", {}),
        Document("2.5", "two and a half", {}),
        Document("a", "both", {"id": "b"}),
    ]


def test_jsonl_title_only_document_is_kept(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"_id": "t", "title": "Just a title", "text": " "}])
    assert read(path) == [Document("t", "Just a title", {"title": "Just a title"})]


def test_jsonl_field_overrides(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [
        {"doc": "x1", "body": "hello", "headline": "Greeting", "_id": "ignored", "text": "other"},
    ])
    docs = read(path, id_field="doc", text_field="body", title_field="headline")
    assert docs == [Document("x1", "Greeting hello",
                             {"_id": "ignored", "text": "other", "title": "Greeting"})]
    no_title = read(path, id_field="doc", text_field="body", title_field=None)
    assert no_title == [Document("x1", "hello",
                                 {"_id": "ignored", "text": "other", "headline": "Greeting"})]


def test_jsonl_blank_lines_crlf_and_bom(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"_id": "1", "text": "a"}\r\n\r\n   \n{"_id": "2", "text": "b"}')
    assert [(d.id, d.text) for d in read(path)] == [("1", "a"), ("2", "b")]


def test_jsonl_malformed_json(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"_id": "1", "text": "a"}\n{"_id": "2", "text": \n', encoding="utf-8")
    with pytest.raises(InputError) as err:
        read(path)
    assert str(err.value).startswith(f"{path}:2: not valid JSON (")


def test_jsonl_missing_id_field(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"doc": "1", "text": "a"}])
    with pytest.raises(InputError) as err:
        read(path)
    message = str(err.value)
    assert message.startswith(f"{path}:1: no field '_id' or 'id'")
    assert "--id-field" in message and "doc, text" in message


def test_jsonl_missing_given_id_field(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"_id": "1", "text": "a"}])
    with pytest.raises(InputError, match=r":1: no field 'key'.*--id-field"):
        read(path, id_field="key")


def test_jsonl_missing_text_field(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"_id": "1", "text": "a"}, {"_id": "2", "body": "b"}])
    with pytest.raises(InputError) as err:
        read(path)
    assert str(err.value).startswith(f"{path}:2: no field 'text'")
    assert "--text-field" in str(err.value)


@pytest.mark.parametrize("line, expected", [
    ('[1, 2]', "expected a JSON object, found an array"),
    ('"just a string"', "expected a JSON object, found a string"),
    ('{"_id": "1", "text": 5}', "field 'text' must be a string, found a number"),
    ('{"_id": "1", "text": null}', "field 'text' must be a string, found null"),
    ('{"_id": {"a": 1}, "text": "x"}', "field '_id' must be a string or a number"),
    ('{"_id": true, "text": "x"}', "field '_id' must be a string or a number"),
    ('{"_id": "1", "text": "x", "metadata": [1]}', "field 'metadata' must be an object"),
    ('{"_id": "1", "text": "x", "title": 3}', "field 'title' must be a string"),
    ('{"_id": "", "text": "x"}', "empty id"),
])
def test_jsonl_bad_records(tmp_path, line, expected):
    path = tmp_path / "c.jsonl"
    path.write_text(line + "\n", encoding="utf-8")
    with pytest.raises(InputError) as err:
        read(path)
    assert str(err.value).startswith(f"{path}:1: {expected}")


def test_jsonl_nul_bytes_removed(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(b'{"_id": "n\x001", "text": "a\x00b \\u0000c"}\n')
    report = ReadReport()
    assert read(path, report=report) == [Document("n1", "ab c", {})]
    assert report.warnings == [] and report.skipped_invalid == 0


def test_jsonl_is_streamed(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"_id": "1", "text": "first"}\nnot json\n', encoding="utf-8")
    docs = read_documents([str(path)])
    assert next(docs) == Document("1", "first", {})
    with pytest.raises(InputError, match=":2: not valid JSON"):
        next(docs)


def test_duplicate_ids_are_left_to_the_caller(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"_id": "1", "text": "a"}, {"_id": "1", "text": "b"}])
    report = ReadReport()
    assert [d.text for d in read(path, report=report)] == ["a", "b"]
    assert report.duplicate_ids == []


# --- CSV / TSV ---------------------------------------------------------------------------


def test_csv_with_title_and_metadata_columns(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text(
        'id,title,text,lang\n'
        '1,Boats,"We went, by boat, to sea.",en\n'
        '2,,"Two\nlines",ko\n',
        encoding="utf-8",
    )
    assert read(path) == [
        Document("1", "Boats We went, by boat, to sea.", {"lang": "en", "title": "Boats"}),
        Document("2", "Two\nlines", {"lang": "ko"}),
    ]


def test_csv_prefers_underscore_id_and_accepts_bom(tmp_path):
    path = tmp_path / "c.csv"
    path.write_bytes("\ufeffid,_id,text\nA,a,hello\n".encode("utf-8"))
    assert read(path) == [Document("a", "hello", {"id": "A"})]


def test_csv_field_overrides(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("key,body,extra\nk1,some body,e\n", encoding="utf-8")
    assert read(path, id_field="key", text_field="body") == [
        Document("k1", "some body", {"extra": "e"})]


def test_tsv_quotes_are_literal(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_text('_id\ttext\tsource\nq1\t"Quoted" text, here\twiki\n', encoding="utf-8")
    assert read(path) == [Document("q1", '"Quoted" text, here', {"source": "wiki"})]
    tab = tmp_path / "c.tab"
    tab.write_text("id\ttext\n9\tnine\n", encoding="utf-8")
    assert read(tab) == [Document("9", "nine", {})]


def test_csv_missing_id_column(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("a,b,text\n1,2,3\n", encoding="utf-8")
    with pytest.raises(InputError) as err:
        read(path)
    assert str(err.value) == (f"{path}: no column '_id' or 'id' in the header "
                              f"(columns: a, b, text); choose one with --id-field")


def test_csv_missing_given_id_column(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("id,text\n1,x\n", encoding="utf-8")
    with pytest.raises(InputError) as err:
        read(path, id_field="pid")
    assert str(err.value) == (f"{path}: no column 'pid' in the header "
                              f"(columns: id, text); choose one with --id-field")


def test_tsv_missing_text_column(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_text("id\tbody\n1\tx\n", encoding="utf-8")
    with pytest.raises(InputError) as err:
        read(path)
    assert str(err.value) == (f"{path}: no column 'text' in the header "
                              f"(columns: id, body); choose one with --text-field")


def test_csv_ragged_row(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("id,text\n1,ok\n2,too,many\n", encoding="utf-8")
    with pytest.raises(InputError) as err:
        read(path)
    assert str(err.value).startswith(f"{path}:3: expected 2 fields")
    assert "found 3" in str(err.value)


def test_tsv_ragged_row_too_few(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_text("id\ttext\tx\n1\tok\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"c\.tsv:2: expected 3 fields .*found 2"):
        read(path)


def test_csv_huge_field(tmp_path):
    big = "w" * 300_000  # above the csv module's default 128 KiB field limit
    path = tmp_path / "c.csv"
    path.write_text(f'id,text\n1,"{big}"\n', encoding="utf-8")
    assert read(path) == [Document("1", big, {})]


def test_csv_empty_file(tmp_path):
    path = tmp_path / "c.csv"
    path.write_bytes(b"")
    with pytest.raises(InputError) as err:
        read(path)
    assert str(err.value) == f"{path}: empty file"


def test_csv_duplicate_header_column(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("id,text,text\n1,a,b\n", encoding="utf-8")
    with pytest.raises(InputError, match="column 'text' appears twice"):
        read(path)


def test_csv_header_only_gives_no_documents(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("id,text\n\n", encoding="utf-8")
    assert read(path) == []


# --- text files, formats, paths ------------------------------------------------------------


def test_text_file_is_one_document_with_path_as_id(tmp_path):
    path = tmp_path / "note.md"
    path.write_text("# Title\n\nBody line.\n", encoding="utf-8")
    assert read(path) == [Document(str(path), "# Title\n\nBody line.\n", {})]


def test_text_file_relative_path_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("a.txt").write_text("alpha", encoding="utf-8")
    assert read_documents(["a.txt"]).__next__() == Document("a.txt", "alpha", {})


def test_unknown_extension_suggests_format(tmp_path):
    path = tmp_path / "data.xyz"
    path.write_text("hello", encoding="utf-8")
    with pytest.raises(InputError) as err:
        read(path)
    assert str(err.value).startswith(f"{path}: unknown file type")
    assert "--format" in str(err.value)
    assert read(path, format="text") == [Document(str(path), "hello", {})]


def test_lines_format_for_a_file(tmp_path):
    path = tmp_path / "q.dat"
    path.write_text("first\n\nthird\n", encoding="utf-8")
    assert read(path, format="lines") == [
        Document(f"{path}:1", "first", {}), Document(f"{path}:3", "third", {})]


def test_unknown_format_value(tmp_path):
    with pytest.raises(InputError, match="unknown format 'xml'"):
        read(tmp_path, format="xml")


def test_missing_path(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(InputError) as err:
        read(missing)
    assert str(err.value) == f"{missing}: no such file or directory"


def test_missing_path_is_reported_before_any_document(tmp_path):
    good = write_jsonl(tmp_path / "c.jsonl", [{"_id": "1", "text": "a"}])
    docs = read_documents([str(good), str(tmp_path / "gone.txt")])
    with pytest.raises(InputError, match="gone.txt: no such file or directory"):
        next(docs)


def test_permission_denied(tmp_path, monkeypatch):
    path = tmp_path / "secret.txt"
    path.write_text("x", encoding="utf-8")

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(sources, "open", denied, raising=False)
    with pytest.raises(InputError) as err:
        read(path)
    assert str(err.value) == f"{path}: permission denied"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root can read files without permission")
def test_permission_denied_real_file(tmp_path):
    path = tmp_path / "secret.txt"
    path.write_text("x", encoding="utf-8")
    path.chmod(0)
    try:
        with pytest.raises(InputError) as err:
            read(path)
        assert str(err.value) == f"{path}: permission denied"
    finally:
        path.chmod(0o644)


# --- directories ---------------------------------------------------------------------------


def test_directory_walk_relative_ids_sorted(tmp_path):
    root = tmp_path / "docs"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "b.txt").write_text("bee", encoding="utf-8")
    (root / "a.md").write_text("ay", encoding="utf-8")
    (root / "sub" / "c.rst").write_text("see", encoding="utf-8")
    (root / "sub" / "deeper" / "d.markdown").write_text("dee", encoding="utf-8")
    (root / "sub" / "data.jsonl").write_text('{"_id": "j1", "text": "json"}\n', encoding="utf-8")
    (root / "table.csv").write_text("id,text\nc1,csv\n", encoding="utf-8")
    (root / "rows.tsv").write_text("id\ttext\nt1\ttsv\n", encoding="utf-8")
    (root / "image.png").write_bytes(b"\x89PNG\x00\x00")
    (root / ".hidden.txt").write_text("hidden", encoding="utf-8")
    docs = read(root)
    assert [(d.id, d.text) for d in docs] == [
        ("a.md", "ay"),
        ("b.txt", "bee"),
        ("t1", "tsv"),  # rows.tsv
        ("sub/c.rst", "see"),
        ("j1", "json"),  # sub/data.jsonl
        ("sub/deeper/d.markdown", "dee"),
        ("c1", "csv"),  # table.csv
    ]
    assert read(root) == docs  # deterministic


def test_directory_symlink_loop_terminates(tmp_path):
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    (root / "top.txt").write_text("top", encoding="utf-8")
    (root / "sub" / "inner.txt").write_text("inner", encoding="utf-8")
    os.symlink(root, root / "sub" / "loop")  # sub/loop -> docs (its own ancestor)
    os.symlink(root / "sub", root / "sub" / "self")  # sub/self -> sub
    assert [d.id for d in read(root)] == ["sub/inner.txt", "top.txt"]


def test_directory_symlinked_directory_is_followed_once(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "o.txt").write_text("outside", encoding="utf-8")
    root = tmp_path / "docs"
    root.mkdir()
    os.symlink(outside, root / "link1")
    os.symlink(outside, root / "link2")
    report = ReadReport()
    assert [d.id for d in read(root, report=report)] == []  # links out of the folder: not by default
    assert report.skipped_links == 2 and "--follow-symlinks" in report.warnings[0]
    assert [d.id for d in read(root, follow_symlinks=True)] == ["link1/o.txt"]
    (root / "inner").mkdir()
    (root / "inner" / "i.txt").write_text("inside", encoding="utf-8")
    os.symlink(root / "inner", root / "alias")  # a link inside the folder is followed once
    assert [d.id for d in read(root)] == ["alias/i.txt"]


def test_directory_broken_symlink_is_skipped(tmp_path):
    root = tmp_path / "docs"
    root.mkdir()
    (root / "ok.txt").write_text("fine", encoding="utf-8")
    os.symlink(tmp_path / "missing.txt", root / "broken.txt")
    report = ReadReport()
    assert [d.id for d in read(root, report=report)] == ["ok.txt"]
    assert report.skipped_invalid == 1 and "broken symbolic link" in report.warnings[0]


def test_directory_ids_are_nfc(tmp_path):
    root = tmp_path / "docs"
    root.mkdir()
    (root / f"{unicodedata.normalize('NFD', '바다')}.txt").write_text(KOREAN_NFD, encoding="utf-8")
    assert read(root) == [Document("바다.txt", KOREAN, {})]


# --- standard input ----------------------------------------------------------------------


def test_stdin_detects_jsonl():
    data = b'\n  \n  {"_id": "s1", "text": "from stdin"}\n{"_id": "s2", "text": "more"}\n'
    assert read("-", stdin=io.BytesIO(data)) == [
        Document("s1", "from stdin", {}), Document("s2", "more", {})]


def test_stdin_lines_mode_ids_are_line_numbers():
    data = b"first query\n\nthird query\r\n   \nfifth\n"
    assert read("-", stdin=io.BytesIO(data)) == [
        Document("1", "first query", {}), Document("3", "third query", {}),
        Document("5", "fifth", {})]


def test_stdin_lines_with_bom_and_brace_later():
    data = b"\xef\xbb\xbfplain\n{not json}\n"
    assert [d.id for d in read("-", stdin=io.BytesIO(data))] == ["1", "2"]


def test_stdin_explicit_formats():
    csv_data = b"id,text,tag\n1,one,x\n"
    assert read("-", format="csv", stdin=io.BytesIO(csv_data)) == [Document("1", "one", {"tag": "x"})]
    assert read("-", format="text", stdin=io.BytesIO(b"all of it\n")) == [
        Document("-", "all of it\n", {})]
    with pytest.raises(InputError, match=r"<stdin>:1: not valid JSON"):
        read("-", format="jsonl", stdin=io.BytesIO(b"plain\n"))


def test_stdin_empty():
    assert read("-", stdin=io.BytesIO(b"")) == []


# --- encodings, binary, empty documents, NFC ----------------------------------------------


def test_invalid_utf8_text_file_strict_and_not(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"abc\xffdef")
    with pytest.raises(InputError) as err:
        read(path, strict=True)
    assert str(err.value) == f"{path}: invalid UTF-8 at byte 3"
    report = ReadReport()
    assert read(path, report=report) == []
    assert report.skipped_invalid == 1
    assert report.warnings == [f"{path}: invalid UTF-8 at byte 3; skipped"]


def test_invalid_utf8_jsonl_skips_only_that_line(tmp_path):
    path = tmp_path / "c.jsonl"
    first = b'{"_id": "1", "text": "ok"}\n'
    second = b'{"_id": "2", "text": "b\xc3("}\n'
    path.write_bytes(first + second + b'{"_id": "3", "text": "fine"}\n')
    report = ReadReport()
    assert [d.id for d in read(path, report=report)] == ["1", "3"]
    offset = len(first) + second.index(b"\xc3")
    assert report.skipped_invalid == 1
    assert report.warnings == [f"{path}:2: invalid UTF-8 at byte {offset}; skipped"]
    with pytest.raises(InputError) as err:
        read(path, strict=True)
    assert str(err.value) == f"{path}:2: invalid UTF-8 at byte {offset}"


def test_invalid_utf8_csv_offset_beyond_first_chunk(tmp_path):
    # Multi-byte characters straddle the reader's chunk boundaries; the offset stays exact.
    body = ("id,text\n" + "".join(f"{i},{KOREAN}\n" for i in range(40_000))).encode("utf-8")
    path = tmp_path / "c.csv"
    path.write_bytes(body + b"x,\xe3\x81\n")
    report = ReadReport()
    assert read(path, report=report) == []  # the whole file is skipped
    assert report.skipped_invalid == 1
    assert report.warnings == [f"{path}: invalid UTF-8 at byte {len(body) + 2}; skipped"]
    path.write_bytes(body)
    assert len(read(path)) == 40_000


def test_invalid_utf8_truncated_at_end_of_file(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_bytes(b"id\ttext\n1\t\xea\xb0")
    with pytest.raises(InputError) as err:
        read(path, strict=True)
    assert str(err.value) == f"{path}: invalid UTF-8 at byte 10"


def test_binary_file_skipped_or_error(tmp_path):
    path = tmp_path / "blob.txt"
    path.write_bytes(b"PK\x03\x04\x00\x00binary stuff")
    report = ReadReport()
    assert read(path, report=report) == []
    assert report.skipped_invalid == 1
    assert report.warnings == [f"{path}: binary file (contains NUL bytes); skipped"]
    with pytest.raises(InputError, match="binary file"):
        read(path, strict=True)


def test_nul_after_first_8k_is_removed(tmp_path):
    path = tmp_path / "late.txt"
    path.write_bytes(b"a" * 9000 + b"\x00b")
    report = ReadReport()
    docs = read(path, report=report)
    assert docs == [Document(str(path), "a" * 9000 + "b", {})]
    assert report.warnings == []


def test_whitespace_only_documents_are_skipped(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [
        {"_id": "1", "text": "   \n\t"}, {"_id": "2", "text": "real"}, {"_id": "3", "text": ""},
        {"_id": "4", "text": "\u3000"},
    ])
    report = ReadReport()
    assert [d.id for d in read(path, report=report)] == ["2"]
    assert report.skipped_empty == 3
    assert report.warnings == [
        f"{path}:1: document '1' has no text; skipped",
        f"{path}:3: document '3' has no text; skipped",
        f"{path}:4: document '4' has no text; skipped",
    ]


def test_empty_text_file_is_counted(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    report = ReadReport()
    assert read(path, report=report) == []
    assert report.skipped_empty == 1
    assert report.warnings == [f"{path}: document '{path}' has no text; skipped"]


def test_korean_nfd_comes_out_nfc(tmp_path):
    assert KOREAN_NFD != KOREAN
    path = write_jsonl(tmp_path / "ko.jsonl", [
        {"_id": unicodedata.normalize("NFD", "문서1"), "title": KOREAN_NFD, "text": KOREAN_NFD}])
    assert read(path) == [Document("문서1", f"{KOREAN} {KOREAN}", {"title": KOREAN})]
    csv_path = tmp_path / "ko.csv"
    csv_path.write_text(f"id,text\nk,{KOREAN_NFD}\n", encoding="utf-8")
    assert read(csv_path) == [Document("k", KOREAN, {})]
    txt = tmp_path / "ko.txt"
    txt.write_text(KOREAN_NFD, encoding="utf-8")
    assert read(txt)[0].text == KOREAN
    assert read("-", stdin=io.BytesIO(KOREAN_NFD.encode("utf-8")))[0].text == KOREAN


def test_several_sources_in_order(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{"_id": "a", "text": "A"}])
    b = tmp_path / "b.txt"
    b.write_text("B", encoding="utf-8")
    docs = read(a, "-", b, stdin=io.BytesIO(b"stdin line\n"))
    assert [d.id for d in docs] == ["a", "1", str(b)]


# --- read_texts (what `semsearch embed --input` reads) ------------------------------------


def test_read_texts_plain_file_ids_are_line_numbers(tmp_path):
    path = tmp_path / "notes:v2.txt"  # a colon in the name does not leak into the ids
    path.write_text("first\n\n  \n{\"_id\": \"x\", \"text\": \"not a record\"}\nlast", encoding="utf-8")
    assert read_texts(path) == [
        Document("1", "first", {}), Document("4", '{"_id": "x", "text": "not a record"}', {}),
        Document("5", "last", {})]
    other = tmp_path / "queries"  # no extension: also one text per line
    other.write_text("a\nb\n", encoding="utf-8")
    assert [(d.id, d.text) for d in read_texts(str(other))] == [("1", "a"), ("2", "b")]


def test_read_texts_stdin_is_lines_even_when_it_looks_like_jsonl():
    data = b'{"_id": "s1", "text": "from stdin"}\n\nplain\n'
    report = ReadReport()
    assert read_texts("-", stdin=io.BytesIO(data), report=report) == [
        Document("1", '{"_id": "s1", "text": "from stdin"}', {}), Document("3", "plain", {})]
    assert report.warnings == []


def test_read_texts_documents_keep_their_ids(tmp_path):
    jsonl = write_jsonl(tmp_path / "c.JSONL", [{"_id": "d:1", "text": "one"}, {"_id": "d2", "text": ""}])
    report = ReadReport()
    assert read_texts(jsonl, report=report) == [Document("d:1", "one", {})]
    assert report.skipped_empty == 1
    ndjson = write_jsonl(tmp_path / "c.ndjson", [{"id": 7, "body": "seven"}])
    assert read_texts(ndjson, text_field="body") == [Document("7", "seven", {})]
    table = tmp_path / "t.tab"
    table.write_text("key\ttext\tlang\nq:7\tseven\ten\n", encoding="utf-8")
    assert read_texts(table, id_field="key") == [Document("q:7", "seven", {"lang": "en"})]
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"_id": "x", "body": "no text field"}])
    with pytest.raises(InputError, match=r"bad\.jsonl:1: no field 'text'"):
        read_texts(bad)


def test_read_texts_explicit_format_wins(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"_id": "a", "text": "alpha"}])
    assert read_texts(path, format="lines") == [Document("1", '{"_id": "a", "text": "alpha"}', {})]
    txt = tmp_path / "records.txt"
    txt.write_text('{"_id": "b", "text": "beta"}\n', encoding="utf-8")
    assert read_texts(txt, format="jsonl") == [Document("b", "beta", {})]
    assert read_texts(txt, format="text") == [Document(str(txt), '{"_id": "b", "text": "beta"}\n', {})]
    assert read_texts("-", format="jsonl", stdin=io.BytesIO(b'{"id": 5, "text": "five"}\n')) == [
        Document("5", "five", {})]


# --- properties ----------------------------------------------------------------------------

_chars = st.characters(exclude_categories=("Cs",))
_pairs = st.lists(st.tuples(st.text(_chars, min_size=1), st.text(_chars)), max_size=8)


def _clean(value: str) -> str:
    return unicodedata.normalize("NFC", value.replace("\x00", ""))


@settings(max_examples=200, deadline=None)
@given(pairs=_pairs, ensure_ascii=st.booleans())
def test_property_jsonl_round_trip(pairs, ensure_ascii):
    pairs = [(i, t) for i, t in pairs if _clean(i)]  # an empty id is an error, tested above
    lines = "".join(json.dumps({"_id": i, "text": t}, ensure_ascii=ensure_ascii) + "\n"
                    for i, t in pairs)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "corpus.jsonl"
        path.write_bytes(lines.encode("utf-8"))
        report = ReadReport()
        docs = list(read_documents([str(path)], report=report))
    expected = [(_clean(i), _clean(t)) for i, t in pairs if _clean(t).strip()]
    assert [(d.id, d.text) for d in docs] == expected
    assert all(d.metadata == {} for d in docs)
    assert report.skipped_empty == len(pairs) - len(expected)


_fragments = st.sampled_from([
    b"{", b"}", b"[", b"]", b'"_id"', b'"id"', b'"text"', b'"title"', b'"metadata"', b":",
    b",", b"1", b"true", b"null", b'"x"', b'"\xea\xb0\x80"', b"\n", b" ", b"\xff", b"\x00",
    b"\xef\xbb\xbf", b"\\u0000", b'"',
])
_jsonish = st.lists(_fragments, max_size=40).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(data=st.one_of(st.binary(max_size=200), _jsonish), strict=st.booleans())
def test_property_any_bytes_parse_or_raise_input_error(data, strict):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.jsonl"
        path.write_bytes(data)
        try:
            docs = list(read_documents([str(path)], strict=strict))
        except InputError as exc:
            assert str(exc).startswith(str(path))
            assert "\n" not in str(exc)
        else:
            assert all(isinstance(d, Document) and d.id and d.text.strip() for d in docs)
            assert all(d.text == unicodedata.normalize("NFC", d.text) for d in docs)
