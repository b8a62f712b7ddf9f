"""Bad input through the ``semsearch`` command: every mistake is a clear message, never a traceback,
and nothing already stored in the index is lost.

Each test starts from an index built with the tiny random BERT and four documents
(``ORIGINAL``), feeds the command one kind of bad input, checks the exit code and
the message (file, line or byte offset where relevant), and then checks that the
stored documents are intact: same count, same texts and metadata, same ranking.
"""

from __future__ import annotations

import errno
import gc
import json
import os
import random
import shutil
import sqlite3
from pathlib import Path

import faiss
import pytest
from click.testing import CliRunner

from cli import cli

ORIGINAL = [
    {"_id": "pw", "text": "how do i reset my password", "metadata": {"lang": "en"}},
    {"_id": "river", "text": "the bank of the river", "metadata": {"lang": "en"}},
    {"_id": "boat", "text": "배를 타고 바다로 갔다", "metadata": {"lang": "ko"}},
    {"_id": "fox", "text": "the quick brown fox jumps over the lazy dog", "metadata": {"lang": "en"}},
]
BASELINE_QUERY = "the bank of the river"

# Words that the tiny model's vocabulary holds whole: one word, one token.
WORDS = """the a an of to and in is it you my me we how do does can what where when why who
reset password login account delete remove invoice billing bank river money boat ship sea eat
pear fruit rates raised sat on find see forgot secret email address change document passage
search index query test long text quick brown fox jumps over lazy dog number cat mat hello
world korean english apple orange""".split()

PNG_BYTES = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10\x00\x00\x00\x10\x08\x06\x00\x00\x00"
    b"\x1f\xf3\xffa\x00\x00\x00\x04gAMA\x00\x00\xb1\x8f\x0b\xfca\x05\x00\x00\x00\x00IEND\xaeB`\x82"
) * 20


# --- helpers --------------------------------------------------------------------------------
@pytest.fixture
def runner():
    return CliRunner()


def invoke(runner, *args, input=None):
    return runner.invoke(cli, [str(a) for a in args], input=input)


def run_ok(runner, *args, input=None):
    result = invoke(runner, *args, input=input)
    assert result.exit_code == 0, result.output
    assert result.exception is None, result.exception
    assert "Traceback" not in result.output
    return result


def error_line(result) -> str:
    """The single ``Error: ...`` line of a failed command (warnings aside)."""
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = [l for l in result.output.strip().splitlines() if not l.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def assert_one_line_error(result, *parts: str) -> str:
    line = error_line(result)
    for part in parts:
        assert part in line, line
    return line


def warnings_of(result) -> list[str]:
    return [l for l in result.stderr.splitlines() if l.startswith("warning:")]


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def info(runner, index) -> dict:
    return json.loads(run_ok(runner, "index", "info", "--index", index, "--json").stdout)


def search(runner, index, text, k=10, *extra) -> list[dict]:
    return json.loads(run_ok(runner, "query", text, "--index", index, "-k", k, "--json", *extra).stdout)["hits"]


def ranking(runner, index, text=BASELINE_QUERY) -> list[tuple[str, float]]:
    return [(h["id"], round(h["score"], 5)) for h in search(runner, index, text, 100)]


def assert_original_docs_intact(runner, index) -> None:
    """Every original document is stored with its text and metadata and is found by its own text."""
    for doc in ORIGINAL:
        hit = search(runner, index, doc["text"], 1)[0]
        assert hit["id"] == doc["_id"], hit
        assert hit["text"] == doc["text"] and hit["metadata"] == doc["metadata"]
        assert hit["score"] > 0.999


def assert_unchanged(runner, index, baseline) -> None:
    """The index is exactly as it was: count, documents and the ranking of the baseline query."""
    data = info(runner, index)
    assert data["documents"] == len(ORIGINAL) and data["passages"] == data["vectors"] == len(ORIGINAL)
    assert ranking(runner, index) == baseline
    assert_original_docs_intact(runner, index)


@pytest.fixture
def built(runner, tiny_model, tmp_path):
    """An index of the four ORIGINAL documents; returns (index path, baseline ranking)."""
    corpus = write_jsonl(tmp_path / "corpus.jsonl", ORIGINAL)
    index = tmp_path / "idx"
    run_ok(runner, "index", "build", corpus, "--index", index, "--model", tiny_model, "-q")
    baseline = ranking(runner, index)
    assert [i for i, _ in baseline][0] == "river" and len(baseline) == 4
    return index, baseline


def add(runner, index, *sources, extra=()):
    return invoke(runner, "index", "add", *sources, "--index", index, "-q", *extra)


def faiss_file(index: Path) -> Path:
    files = sorted(index.glob("vectors-*.faiss"))
    assert len(files) == 1, files
    return files[0]


# --- files: empty input ----------------------------------------------------------------------------
def test_empty_text_file_is_skipped_with_a_warning(runner, built, tmp_path):
    index, baseline = built
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    result = add(runner, index, empty)
    assert result.exit_code == 0, result.output
    assert warnings_of(result) == [f"warning: {empty}: document '{empty}' has no text; skipped"]
    assert "0 added" in result.stderr
    assert_unchanged(runner, index, baseline)


def test_empty_csv_file_is_an_error(runner, built, tmp_path):
    index, baseline = built
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    assert_one_line_error(add(runner, index, empty), f"{empty}: empty file")
    assert_unchanged(runner, index, baseline)


def test_empty_jsonl_file_is_reported(runner, built, tmp_path):
    """An empty JSONL file holds no document: the user is told (by name), nothing changes."""
    index, baseline = built
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    result = add(runner, index, empty)
    assert result.exit_code == 0, result.output
    assert "0 added" in result.stderr
    assert any(str(empty) in w for w in warnings_of(result)), result.stderr
    assert_unchanged(runner, index, baseline)


def test_empty_and_whitespace_only_documents_are_skipped_and_reported(runner, built, tmp_path):
    index, _ = built
    src = write_jsonl(tmp_path / "mixed.jsonl", [
        {"_id": "new", "text": "hello world"},
        {"_id": "e1", "text": ""},
        {"_id": "w1", "text": " \t\r\n \u3000 "},
        {"_id": "z1", "text": "\u200b\u200b"},  # zero-width spaces: no token at all
    ])
    result = add(runner, index, src)
    assert result.exit_code == 0, result.output
    warned = warnings_of(result)
    assert f"warning: {src}:2: document 'e1' has no text; skipped" in warned
    assert f"warning: {src}:3: document 'w1' has no text; skipped" in warned
    assert any("z1" in w and "no text" in w for w in warned), warned
    assert "1 added" in result.stderr
    assert info(runner, index)["documents"] == 5
    assert search(runner, index, "hello world", 1)[0]["id"] == "new"
    assert_original_docs_intact(runner, index)


def test_empty_csv_cells_are_skipped_with_line_numbers(runner, built, tmp_path):
    index, _ = built
    src = tmp_path / "cells.csv"
    src.write_text("id,text\nc1,\nc2,   \nc3,hello world\n", encoding="utf-8")
    result = add(runner, index, src)
    assert result.exit_code == 0, result.output
    assert warnings_of(result) == [
        f"warning: {src}:2: document 'c1' has no text; skipped",
        f"warning: {src}:3: document 'c2' has no text; skipped",
    ]
    assert info(runner, index)["documents"] == 5
    assert_original_docs_intact(runner, index)


# --- files: binary and invalid UTF-8 -----------------------------------------------------------------
def test_binary_text_file_is_skipped_and_strict_fails(runner, built, tmp_path):
    index, baseline = built
    png = tmp_path / "image.txt"
    png.write_bytes(PNG_BYTES)
    result = add(runner, index, png)
    assert result.exit_code == 0, result.output
    assert warnings_of(result) == [f"warning: {png}: binary file (contains NUL bytes); skipped"]
    assert "0 added" in result.stderr
    assert_unchanged(runner, index, baseline)

    strict = add(runner, index, png, extra=["--strict"])
    assert_one_line_error(strict, f"{png}: binary file")
    assert_unchanged(runner, index, baseline)


def test_binary_csv_file_is_skipped(runner, built, tmp_path):
    index, baseline = built
    png = tmp_path / "image.csv"
    png.write_bytes(b"id,text\n" + PNG_BYTES)
    result = add(runner, index, png)
    assert result.exit_code == 0, result.output
    assert warnings_of(result) == [f"warning: {png}: binary file (contains NUL bytes); skipped"]
    assert_unchanged(runner, index, baseline)


def test_binary_jsonl_file_fails_on_its_first_bad_line(runner, built, tmp_path):
    """JSONL is read line by line (NULs inside strings are allowed), so binary bytes named .jsonl
    are not sniffed as binary: the first line that is not JSON is a one-line error."""
    index, baseline = built
    png = tmp_path / "image.jsonl"
    png.write_bytes(PNG_BYTES)
    assert_one_line_error(add(runner, index, png), f"{png}:2: not valid JSON")
    assert_one_line_error(add(runner, index, png, extra=["--strict"]), f"{png}:1: invalid UTF-8 at byte 0")
    assert_unchanged(runner, index, baseline)


def test_binary_file_in_a_folder_is_skipped(runner, built, tmp_path):
    index, baseline = built
    folder = tmp_path / "notes"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("hello world", encoding="utf-8")
    (folder / "scan.txt").write_bytes(PNG_BYTES)
    (folder / "photo.png").write_bytes(PNG_BYTES)  # not a document type: ignored
    (folder / "sub" / "b.md").write_text("the cat sat on the mat", encoding="utf-8")
    scan = os.path.join(str(folder), "scan.txt")

    strict = add(runner, index, folder, extra=["--strict"])
    assert_one_line_error(strict, f"{scan}: binary file")
    assert_unchanged(runner, index, baseline)  # a.txt, read before scan.txt, was not committed

    result = add(runner, index, folder)
    assert result.exit_code == 0, result.output
    assert warnings_of(result) == [f"warning: {scan}: binary file (contains NUL bytes); skipped"]
    assert "2 added" in result.stderr
    assert info(runner, index)["documents"] == 6
    assert search(runner, index, "hello world", 1)[0]["id"] == "a.txt"
    assert search(runner, index, "the cat sat on the mat", 1)[0]["id"] == "sub/b.md"
    assert_original_docs_intact(runner, index)


def test_invalid_utf8_jsonl_lines_are_skipped_with_byte_offsets(runner, built, tmp_path):
    index, baseline = built
    lines = [
        b'{"_id": "g1", "text": "hello world"}\n',
        b'{"_id": "b1", "text": "caf\xe9 au lait"}\n',
        b'{"_id": "g2", "text": "the cat sat on the mat"}\n',
        b'{"_id": "b2", "text": "\xff\xfe"}\n',
    ]
    src = tmp_path / "latin1.jsonl"
    src.write_bytes(b"".join(lines))
    first_bad = len(lines[0]) + lines[1].index(b"\xe9")
    second_bad = len(lines[0]) + len(lines[1]) + len(lines[2]) + lines[3].index(b"\xff")

    strict = add(runner, index, src, extra=["--strict"])
    assert_one_line_error(strict, f"{src}:2: invalid UTF-8 at byte {first_bad}")
    assert_unchanged(runner, index, baseline)

    result = add(runner, index, src)
    assert result.exit_code == 0, result.output
    assert warnings_of(result) == [
        f"warning: {src}:2: invalid UTF-8 at byte {first_bad}; skipped",
        f"warning: {src}:4: invalid UTF-8 at byte {second_bad}; skipped",
    ]
    assert "2 added" in result.stderr
    assert info(runner, index)["documents"] == 6
    assert_original_docs_intact(runner, index)


def test_many_invalid_lines_are_counted(runner, built, tmp_path):
    index, _ = built
    src = tmp_path / "many.jsonl"
    good = b'{"_id": "g", "text": "hello world"}\n'
    bad = [b'{"_id": "b%d", "text": "\xff"}\n' % i for i in range(25)]
    src.write_bytes(good + b"".join(bad))
    result = add(runner, index, src)
    assert result.exit_code == 0, result.output
    warned = warnings_of(result)
    assert len(warned) == 21 and warned[-1] == "warning: ... and 5 more", warned
    offset = len(good) + bad[0].index(b"\xff")
    assert warned[0] == f"warning: {src}:2: invalid UTF-8 at byte {offset}; skipped"
    assert "1 added" in result.stderr
    assert info(runner, index)["documents"] == 5


def test_invalid_utf8_text_file_names_the_byte(runner, built, tmp_path):
    index, baseline = built
    src = tmp_path / "latin1.txt"
    src.write_bytes("naïve café".encode("utf-8") + b" and caf\xe9")
    offset = len("naïve café".encode("utf-8") + b" and caf")
    result = add(runner, index, src)
    assert result.exit_code == 0, result.output
    assert warnings_of(result) == [f"warning: {src}: invalid UTF-8 at byte {offset}; skipped"]
    assert_unchanged(runner, index, baseline)
    assert_one_line_error(add(runner, index, src, extra=["--strict"]), f"{src}: invalid UTF-8 at byte {offset}")
    assert_unchanged(runner, index, baseline)


def test_invalid_utf8_deep_in_a_large_csv_names_the_exact_byte(runner, built, tmp_path):
    """The CSV check reads in chunks: the offset must be exact across chunk boundaries."""
    index, baseline = built
    header = b"id,text\n"
    row = "r,한국어 텍스트 hello\n".encode("utf-8")  # multi-byte characters straddle chunk edges
    body = header + row * (1_300_000 // len(row))
    offset = len(body) + len(b"x,abc ")
    src = tmp_path / "big.csv"
    src.write_bytes(body + b"x,abc \xff\n")
    result = add(runner, index, src, extra=["--strict"])
    assert_one_line_error(result, f"{src}: invalid UTF-8 at byte {offset}")
    assert_unchanged(runner, index, baseline)


# --- files: NUL bytes, malformed JSON, bad tables ----------------------------------------------------
def test_nul_characters_inside_json_strings_are_removed(runner, built, tmp_path):
    index, _ = built
    src = tmp_path / "nul.jsonl"
    src.write_bytes(
        b'{"_id": "nul\\u0000id", "text": "reset\\u0000 my password now"}\n'
        b'{"_id": "raw", "text": "the cat\x00 sat on the mat"}\n'
    )
    result = add(runner, index, src)
    assert result.exit_code == 0, result.output
    assert "2 added" in result.stderr
    hit = search(runner, index, "reset my password now", 1)[0]
    assert hit["id"] == "nulid" and hit["text"] == "reset my password now"
    hit = search(runner, index, "the cat sat on the mat", 1)[0]
    assert hit["id"] == "raw" and hit["text"] == "the cat sat on the mat"
    assert info(runner, index)["documents"] == 6
    assert_original_docs_intact(runner, index)


@pytest.mark.parametrize("bad_line, reason", [
    ('{"_id": "x", "text": "unterminated}', "not valid JSON"),
    ('{"_id": "x", "text": "a",}', "not valid JSON"),
    ('["_id", "x"]', "expected a JSON object, found an array"),
    ('{"_id": "x"}', "no field 'text'"),
    ('{"_id": {"a": 1}, "text": "a"}', "field '_id' must be a string or a number"),
    ('[' * 100_000, "not valid JSON"),
])
def test_malformed_json_line_names_file_and_line(runner, built, tmp_path, bad_line, reason):
    index, baseline = built
    src = tmp_path / "bad.jsonl"
    src.write_text('{"_id": "ok1", "text": "hello world"}\n\n' + bad_line + '\n{"_id": "ok2", "text": "a"}\n',
                   encoding="utf-8")
    assert_one_line_error(add(runner, index, src), f"{src}:3:", reason)
    assert_unchanged(runner, index, baseline)


@pytest.mark.parametrize("name, content, message", [
    ("no-id.csv", "name,text\na,hello world\n", "no column '_id' or 'id' in the header (columns: name, text)"),
    ("no-text.csv", "id,body\na,hello world\n", "no column 'text' in the header (columns: id, body)"),
    ("no-id.tsv", "name\ttext\na\thello world\n", "no column '_id' or 'id' in the header (columns: name, text)"),
    ("no-text.tsv", "id\tbody\na\thello world\n", "no column 'text' in the header (columns: id, body)"),
])
def test_table_without_id_or_text_column(runner, built, tmp_path, name, content, message):
    index, baseline = built
    src = tmp_path / name
    src.write_text(content, encoding="utf-8")
    line = assert_one_line_error(add(runner, index, src), f"{src}: {message}")
    assert "--id-field" in line or "--text-field" in line
    assert_unchanged(runner, index, baseline)


@pytest.mark.parametrize("name, content, where, found", [
    ("short.csv", "id,text,lang\na,hello world,en\nb,the cat\n", 3, 2),
    ("long.csv", "id,text,lang\na,hello world,en\nb,the cat,en,extra\n", 3, 4),
    ("short.tsv", "id\ttext\tlang\na\thello world\ten\nb\tthe cat\n", 3, 2),
    ("quoted.csv", 'id,text,lang\na,"hello\nworld",en\nb,"x"\n', 4, 2),
])
def test_ragged_rows_name_the_line(runner, built, tmp_path, name, content, where, found):
    index, baseline = built
    src = tmp_path / name
    src.write_text(content, encoding="utf-8")
    assert_one_line_error(add(runner, index, src), f"{src}:{where}: expected 3 fields as in the header, found {found}")
    assert_unchanged(runner, index, baseline)


def test_huge_csv_field_is_stored_intact(runner, built, tmp_path):
    index, _ = built
    notes = "x" * 2_000_000 + " 한국어 end"
    src = tmp_path / "huge.csv"
    src.write_text(f'id,text,notes\nbig,hello world,"{notes}"\n', encoding="utf-8")
    result = add(runner, index, src)
    assert result.exit_code == 0, result.output
    assert "1 added" in result.stderr
    hit = search(runner, index, "hello world", 1)[0]
    assert hit["id"] == "big" and hit["metadata"]["notes"] == notes
    assert info(runner, index)["documents"] == 5
    assert_original_docs_intact(runner, index)


def test_huge_tsv_text_field_is_split_into_passages(runner, built, tmp_path):
    index, _ = built
    rng = random.Random(7)
    text = " ".join(rng.choice(WORDS) for _ in range(60_000))  # about 300 KB in one field
    src = tmp_path / "huge.tsv"
    src.write_text(f"id\ttext\nhuge\t{text}\n", encoding="utf-8")
    result = add(runner, index, src)
    assert result.exit_code == 0, result.output
    data = info(runner, index)
    assert data["documents"] == 5 and data["passages"] == data["vectors"] > 1000


def test_large_document_is_split_into_many_passages(runner, built, tmp_path):
    index, _ = built
    rng = random.Random(0)
    words = [rng.choice(WORDS) for _ in range(60_000)]
    text = " ".join(words)
    assert 250_000 < len(text.encode()) < 400_000
    src = write_jsonl(tmp_path / "large.jsonl", [{"_id": "large", "text": text, "metadata": {"size": "big"}}])
    result = add(runner, index, src)
    assert result.exit_code == 0, result.output
    assert "1 added" in result.stderr

    data = info(runner, index)
    window = data["passage_tokens"]
    step = window - data["passage_overlap"]
    expected = 1 + -(-(len(words) - window) // step)  # one word, one token
    assert data["documents"] == 5
    assert data["passages"] == data["vectors"] == 4 + expected

    # A passage from the middle is found by its own text, at its own place.
    order = expected // 2
    first = order * step
    passage_text = " ".join(words[first : first + window])
    hit = search(runner, index, passage_text, 1)[0]
    assert hit["id"] == "large" and hit["text"] == text and hit["metadata"] == {"size": "big"}
    assert hit["passage"]["order"] == order
    start = len(" ".join(words[:first])) + 1
    assert hit["passage"]["start"] == start and hit["passage"]["text"] == passage_text
    assert hit["passage"]["end"] == start + len(passage_text)
    assert hit["score"] > 0.999
    assert_original_docs_intact(runner, index)


# --- files: paths --------------------------------------------------------------------------------------
def test_missing_paths_are_errors_and_nothing_is_added(runner, built, tmp_path):
    index, baseline = built
    good = write_jsonl(tmp_path / "good.jsonl", [{"_id": "g", "text": "hello world"}])
    missing = tmp_path / "missing.jsonl"
    assert_one_line_error(add(runner, index, missing), f"{missing}: no such file or directory")
    assert_one_line_error(add(runner, index, good, missing), f"{missing}: no such file or directory")
    folder = tmp_path / "no-such-folder"
    assert_one_line_error(add(runner, index, folder), f"{folder}: no such file or directory")
    assert_unchanged(runner, index, baseline)


def test_unknown_file_type_is_an_error(runner, built, tmp_path):
    index, baseline = built
    png = tmp_path / "image.png"
    png.write_bytes(PNG_BYTES)
    assert_one_line_error(add(runner, index, png), f"{png}: unknown file type", "--format")
    assert_unchanged(runner, index, baseline)


def test_unreadable_file(runner, built, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("running as root: root can read a chmod 000 file")
    index, baseline = built
    src = write_jsonl(tmp_path / "secret.jsonl", [{"_id": "s", "text": "hello world"}])
    src.chmod(0)
    try:
        assert_one_line_error(add(runner, index, src), f"{src}: permission denied")
    finally:
        src.chmod(0o644)
    assert_unchanged(runner, index, baseline)


def test_unreadable_file_simulated(runner, built, tmp_path, monkeypatch):
    """The same as above for root: opening the file fails with EACCES."""
    import builtins

    from index.ingest import sources

    index, baseline = built
    src = write_jsonl(tmp_path / "secret.jsonl", [{"_id": "s", "text": "hello world"}])

    def deny(path, *args, **kwargs):
        if os.fspath(path) == str(src):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return builtins.open(path, *args, **kwargs)

    monkeypatch.setattr(sources, "open", deny, raising=False)
    assert_one_line_error(add(runner, index, src), f"{src}: permission denied")
    monkeypatch.undo()
    assert_unchanged(runner, index, baseline)


def test_folder_with_symbolic_link_loops(runner, built, tmp_path):
    index, _ = built
    folder = tmp_path / "loop"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("hello world", encoding="utf-8")
    (folder / "sub" / "b.md").write_text("the cat sat on the mat", encoding="utf-8")
    (folder / "sub" / "up").symlink_to(folder, target_is_directory=True)  # sub/up -> the top: a loop
    (folder / "sub" / "self").symlink_to(folder / "sub", target_is_directory=True)
    (folder / "ring.txt").symlink_to(folder / "ring.txt")  # a link to itself
    result = add(runner, index, folder)
    assert result.exit_code == 0, result.output
    assert "2 added" in result.stderr
    ring = os.path.join(str(folder), "ring.txt")
    assert any(w.startswith(f"warning: {ring}:") and "skipped" in w for w in warnings_of(result)), result.output
    assert info(runner, index)["documents"] == 6
    assert search(runner, index, "hello world", 1)[0]["id"] == "a.txt"
    assert search(runner, index, "the cat sat on the mat", 1)[0]["id"] == "sub/b.md"
    assert_original_docs_intact(runner, index)


def test_duplicate_ids_in_one_input_last_wins(runner, built, tmp_path):
    index, _ = built
    src = write_jsonl(tmp_path / "dups.jsonl", [
        {"_id": "d1", "text": "the first text of d1"},
        {"_id": "d2", "text": "the cat sat on the mat"},
        {"_id": "d1", "text": "hello world", "metadata": {"v": 2}},
        {"_id": "pw", "text": "an old text for pw"},
        {"_id": "pw", "text": ORIGINAL[0]["text"], "metadata": ORIGINAL[0]["metadata"]},
    ])
    result = add(runner, index, src)
    assert result.exit_code == 0, result.output
    assert "warning: 2 repeated id(s) in the input; the last of each was kept: d1, pw" in result.stderr
    assert "2 added, 0 updated, 1 unchanged" in result.stderr
    hit = search(runner, index, "hello world", 1)[0]
    assert hit["id"] == "d1" and hit["text"] == "hello world" and hit["metadata"] == {"v": 2}
    assert info(runner, index)["documents"] == 6
    assert_original_docs_intact(runner, index)


# --- values ---------------------------------------------------------------------------------------------
LONG_ID = "id-" + "가나다abc" * 1706  # about 10 KB in UTF-8
ODD_DOCS = [
    {"_id": "it's \"quoted\" \\ back`tick`", "text": "the quick brown fox",
     "metadata": {"quote": "she said \"hi\" and 'bye'", "sql": "'; DROP TABLE documents; --"}},
    {"_id": "문서-1 📄🔥", "text": "배를 먹었다",
     "metadata": {"ko": "한국어 😀", "nested": {"a": {"b": [1, {"c": "d"}], "e": None}, "f": 1.5, "t": True}}},
    {"_id": LONG_ID, "text": "hello world", "metadata": {"long": "값" * 10_000}},
]


def test_odd_ids_and_metadata_round_trip(runner, built, tmp_path):
    index, _ = built
    assert len(LONG_ID.encode()) > 10_000
    src = write_jsonl(tmp_path / "odd.jsonl", ODD_DOCS)
    result = add(runner, index, src)
    assert result.exit_code == 0, result.output
    assert "3 added" in result.stderr
    for doc in ODD_DOCS:
        hit = search(runner, index, doc["text"], 1)[0]
        assert hit["id"] == doc["_id"]
        assert hit["metadata"] == doc["metadata"]
        text_out = run_ok(runner, "query", doc["text"], "--index", index, "-k", "1").stdout
        assert doc["_id"] in text_out
    hits = search(runner, index, "배를 먹었다", 10, "--where", "ko=한국어 😀")
    assert [h["id"] for h in hits] == ["문서-1 📄🔥"]
    hits = search(runner, index, "the quick brown fox", 10, "--where", "sql='; DROP TABLE documents; --")
    assert [h["id"] for h in hits] == [ODD_DOCS[0]["_id"]]
    assert info(runner, index)["documents"] == 7

    deleted = run_ok(runner, "index", "delete", LONG_ID, ODD_DOCS[0]["_id"], "--index", index)
    assert "deleted 2 document(s)" in deleted.stderr
    assert info(runner, index)["documents"] == 5
    assert_original_docs_intact(runner, index)


def test_quoted_csv_values_round_trip(runner, built, tmp_path):
    index, _ = built
    src = tmp_path / "quoted.csv"
    src.write_text('id,text,note\n"a ""b"", c","hello, world","x ""y"" \'z\'"\n', encoding="utf-8")
    result = add(runner, index, src)
    assert result.exit_code == 0, result.output
    hit = search(runner, index, "hello, world", 1)[0]
    assert hit["id"] == 'a "b", c' and hit["text"] == "hello, world" and hit["metadata"] == {"note": "x \"y\" 'z'"}


@pytest.mark.parametrize("key", ['say "hi"', "it's", "a.b", "한국어 키", "$[0]"])
def test_where_on_metadata_keys_with_odd_characters(runner, built, tmp_path, key):
    index, _ = built
    src = write_jsonl(tmp_path / "keys.jsonl", [{"_id": "k", "text": "hello world", "metadata": {key: "yes"}}])
    run_ok(runner, "index", "add", src, "--index", index, "-q")
    hits = search(runner, index, "hello world", 10, "--where", f"{key}=yes")
    assert [h["id"] for h in hits] == ["k"]
    assert hits[0]["metadata"] == {key: "yes"}


@pytest.mark.parametrize("where", [
    "lang=' OR 1=1 --",
    'lang="; DROP TABLE documents; --',
    "lang=en' OR '1'='1",
    "lang=%",
    "lang=*",
    "lang') OR 1=1 --=en",
    "lang\" OR 1=1 --=en",
    "$.lang=en' --",
])
def test_where_with_sql_metacharacters_matches_nothing(runner, built, where):
    index, baseline = built
    hits = search(runner, index, "the bank", 10, "--where", where)
    assert hits == []
    text = run_ok(runner, "query", "the bank", "--index", index, "--where", where)
    assert text.stdout == "" and "no matching documents" in text.stderr
    assert_unchanged(runner, index, baseline)


@pytest.mark.parametrize("k", ["0", "-3"])
def test_k_below_one_is_a_clear_error(runner, built, k):
    index, baseline = built
    result = invoke(runner, "query", "the bank", "--index", index, "-k", k)
    assert_one_line_error(result, f"k must be a whole number of at least 1 (got {k})")
    assert result.stdout == ""
    assert_unchanged(runner, index, baseline)


def test_k_larger_than_the_index_returns_every_document(runner, built):
    index, baseline = built
    hits = search(runner, index, "the bank", 1000)
    assert sorted(h["id"] for h in hits) == sorted(d["_id"] for d in ORIGINAL)
    lines = run_ok(runner, "query", "the bank", "--index", index, "-k", "1000").stdout.splitlines()
    assert len(lines) == 4
    hits = search(runner, index, "the bank", 1000, "--where", "lang=en")
    assert sorted(h["id"] for h in hits) == ["fox", "pw", "river"]


@pytest.mark.parametrize("query", ["", "   ", " \t\n ", "\u3000"])
def test_empty_query_is_a_clear_error(runner, built, query):
    index, baseline = built
    result = invoke(runner, "query", query, "--index", index)
    assert_one_line_error(result, "query is empty")
    assert result.stdout == ""
    assert_unchanged(runner, index, baseline)


def test_very_long_query_works(runner, built):
    index, baseline = built
    words = (BASELINE_QUERY + " ") * 10_000
    query = words[:100_000]
    assert len(query) == 100_000
    result = run_ok(runner, "query", query, "--index", index, "-k", "3", "--json")
    data = json.loads(result.stdout)
    assert data["query"] == query
    assert len(data["hits"]) == 3
    assert {h["id"] for h in data["hits"]} <= {d["_id"] for d in ORIGINAL}
    other = [l for l in result.stderr.splitlines() if l.strip()]
    assert all(l.startswith("warning:") and "truncated" in l for l in other), result.stderr
    assert_unchanged(runner, index, baseline)


# --- index files ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "wrong-count", "wrong-dimension"])
def test_damaged_faiss_file_is_rebuilt_from_stored_vectors(runner, built, damage):
    index, baseline = built
    path = faiss_file(index)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(random.Random(1).randbytes(len(data)))
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "wrong-count":
        faiss.write_index(faiss.IndexIDMap2(faiss.IndexFlatIP(32)), str(path))
    else:
        faiss.write_index(faiss.IndexIDMap2(faiss.IndexFlatIP(8)), str(path))

    result = run_ok(runner, "query", BASELINE_QUERY, "--index", index, "-k", "100", "--json")
    assert [(h["id"], round(h["score"], 5)) for h in json.loads(result.stdout)["hits"]] == baseline
    assert_unchanged(runner, index, baseline)

    # The next write replaces the damaged file with a good one (a base, and the write's delta).
    src = write_jsonl(index.parent / "more.jsonl", [{"_id": "new", "text": "hello world"}])
    assert "1 added" in run_ok(runner, "index", "add", src, "--index", index, "-q").stderr
    from index.indexer import Index
    from index.storage.generations import base_generation, read_vectors

    with Index.open(index) as opened:
        generation = opened.store.generation()
        base = base_generation(opened.store.get_info(), generation)
    repaired = read_vectors(index, base, generation)
    assert repaired.ntotal == 5 and repaired.dimension == 32
    assert search(runner, index, "hello world", 1)[0]["id"] == "new"
    assert_original_docs_intact(runner, index)


def _checkpoint(db: Path) -> None:
    """Fold the write-ahead log into the database file, so that the file alone is the database."""
    gc.collect()  # close connections that finished commands left behind
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def _remove_db(index: Path) -> Path:
    db = index / "semsearch.db"
    _checkpoint(db)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    return db


@pytest.mark.parametrize("command", [
    ["query", "the bank"], ["index", "info"], ["index", "add", "{src}"], ["index", "delete", "pw"],
    ["index", "rebuild"],
])
def test_corrupted_sqlite_file_is_a_one_line_error(runner, built, tmp_path, command):
    index, _ = built
    src = write_jsonl(tmp_path / "more.jsonl", [{"_id": "new", "text": "hello world"}])
    db = index / "semsearch.db"
    _checkpoint(db)
    junk = b"this is not a database, just junk\n" * 200
    db.write_bytes(junk)
    args = [a.format(src=src) for a in command]
    assert_one_line_error(invoke(runner, *args, "--index", index), str(db))
    assert db.read_bytes() == junk  # not "repaired" into something else


def test_zero_byte_sqlite_file_is_a_one_line_error(runner, built):
    """A database file cut to nothing (e.g. by a full disk) is damage, not a new empty index."""
    index, _ = built
    db = _remove_db(index)
    db.write_bytes(b"")
    assert_one_line_error(invoke(runner, "query", "the bank", "--index", index), str(db))
    assert_one_line_error(invoke(runner, "index", "info", "--index", index), str(db))


def test_foreign_sqlite_database_is_a_one_line_error(runner, built, tmp_path):
    index, _ = built
    db = _remove_db(index)
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO users (name) VALUES ('alice'), ('bob')")
    conn.commit()
    conn.close()
    src = write_jsonl(tmp_path / "more.jsonl", [{"_id": "new", "text": "hello world"}])
    for args in (["query", "the bank"], ["index", "info"], ["index", "add", str(src)]):
        assert_one_line_error(invoke(runner, *args, "--index", index), str(db), "not a semsearch index")
    conn = sqlite3.connect(db)
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    rows = conn.execute("SELECT name FROM users ORDER BY id").fetchall()
    conn.close()
    assert tables == ["users"] and rows == [("alice",), ("bob",)]


def test_newer_schema_version_asks_to_upgrade(runner, built, tmp_path):
    index, _ = built
    db = index / "semsearch.db"
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO migrations VALUES (99, 'from_the_future', '2099-01-01T00:00:00+00:00')")
    conn.commit()
    conn.close()
    src = write_jsonl(tmp_path / "more.jsonl", [{"_id": "new", "text": "hello world"}])
    for args in (["query", "the bank"], ["index", "info"], ["index", "add", str(src)]):
        assert_one_line_error(invoke(runner, *args, "--index", index), str(db), "schema version 99", "upgrade")
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM documents").fetchone()[0] == 4
    assert conn.execute("SELECT max(version) FROM migrations").fetchone()[0] == 99
    conn.close()


def test_a_changed_model_suggests_rebuild(runner, index_of_a_changed_model, tmp_path):
    """The model's weights changed under the index: refused in one line until a rebuild. (A recorded
    fingerprint that merely differs, with the same vectors, is re-stamped: tests/test_portable.py.)"""
    index = index_of_a_changed_model
    recorded = info(runner, index)["model_fingerprint"]
    assert_one_line_error(invoke(runner, "query", "the bank", "--index", index),
                          "no longer matches", recorded, "semsearch index rebuild")
    src = write_jsonl(tmp_path / "more.jsonl", [{"_id": "new", "text": "hello world"}])
    assert_one_line_error(add(runner, index, src), "semsearch index rebuild")
    assert info(runner, index)["documents"] == 1

    run_ok(runner, "index", "rebuild", "--index", index, "-q")
    assert info(runner, index)["model_fingerprint"] != recorded


def test_overwritten_model_weights_are_detected(runner, tiny_model, tiny_model_other, tmp_path, monkeypatch):
    from index.model.encoder import Encoder

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    corpus = write_jsonl(tmp_path / "corpus.jsonl", ORIGINAL)
    index = tmp_path / "idx"
    run_ok(runner, "index", "build", corpus, "--index", index, "--model", model, "-q")
    before = info(runner, index)["model_fingerprint"]

    for weights in Path(tiny_model_other).glob("*.safetensors"):
        shutil.copy(weights, model / weights.name)
    Encoder.clear_cache()  # a new process: the model is loaded again
    line = assert_one_line_error(invoke(runner, "query", "the bank", "--index", index),
                                 "no longer matches", "semsearch index rebuild")
    assert before in line

    run_ok(runner, "index", "rebuild", "--index", index, "-q")
    after = info(runner, index)
    assert after["model_fingerprint"] != before and after["documents"] == 4
    assert_original_docs_intact(runner, index)


# --- disk full ----------------------------------------------------------------------------------------------
def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _new_docs(tmp_path):
    return write_jsonl(tmp_path / "new.jsonl", [
        {"_id": "new1", "text": "hello world"}, {"_id": "new2", "text": "the cat sat on the mat"},
    ])


def _check_recovers(runner, index, baseline, src):
    """After the failure: the previous state, searchable; then the same add succeeds."""
    assert not list(index.glob(".*tmp*")), list(index.iterdir())
    assert_original_docs_intact(runner, index)
    data = info(runner, index)
    assert data["passages"] == data["vectors"]
    assert_unchanged(runner, index, baseline)
    result = run_ok(runner, "index", "add", src, "--index", index, "-q")
    assert "2 added" in result.stderr
    assert info(runner, index)["documents"] == 6
    assert search(runner, index, "hello world", 1)[0]["id"] == "new1"


def test_disk_full_while_writing_the_faiss_file(runner, built, tmp_path, monkeypatch):
    index, baseline = built
    src = _new_docs(tmp_path)
    monkeypatch.setattr(faiss, "write_index", _no_space)
    assert_one_line_error(add(runner, index, src), "No space left on device")
    monkeypatch.undo()
    _check_recovers(runner, index, baseline, src)


def test_disk_full_as_faiss_reports_it(runner, built, tmp_path, monkeypatch):
    """FAISS reports a full disk as a RuntimeError (seen with /dev/full), not as an OSError."""
    index, baseline = built
    src = _new_docs(tmp_path)

    def faiss_no_space(index_, path):
        raise RuntimeError(
            "Error in void faiss::write_index(const Index*, IOWriter*, int) at "
            "/project/faiss/impl/index_write.cpp:499: Error: 'ret == (size * 4)' failed: "
            f"write error in {path}: 4014 != 2560000 (No space left on device)"
        )

    monkeypatch.setattr(faiss, "write_index", faiss_no_space)
    assert_one_line_error(add(runner, index, src), "No space left on device")
    monkeypatch.undo()
    _check_recovers(runner, index, baseline, src)


def test_disk_full_while_renaming_the_faiss_file(runner, built, tmp_path, monkeypatch):
    from index import files

    index, baseline = built
    src = _new_docs(tmp_path)
    monkeypatch.setattr(files.os, "replace", _no_space)
    assert_one_line_error(add(runner, index, src), "No space left on device")
    monkeypatch.undo()
    _check_recovers(runner, index, baseline, src)


def test_disk_full_while_writing_documents(runner, built, tmp_path, monkeypatch):
    from index.storage.store import MetadataStore

    index, baseline = built
    src = _new_docs(tmp_path)
    monkeypatch.setattr(MetadataStore, "write_document", _no_space)
    assert_one_line_error(add(runner, index, src), "No space left on device")
    monkeypatch.undo()
    _check_recovers(runner, index, baseline, src)


def test_disk_full_while_deleting(runner, built, tmp_path, monkeypatch):
    """A delete that fails on a full disk must not have deleted anything."""
    import index.storage.deltas as deltas_module

    index, baseline = built
    monkeypatch.setattr(faiss, "write_index", _no_space)  # a new base, or...
    monkeypatch.setattr(deltas_module, "open", _no_space, raising=False)  # ...the delta of this write
    assert_one_line_error(invoke(runner, "index", "delete", "pw", "--index", index), "No space left on device")
    monkeypatch.undo()
    assert not list(index.glob(".*tmp*")), list(index.iterdir())
    assert_unchanged(runner, index, baseline)


def test_disk_full_in_sqlite(runner, built, tmp_path, monkeypatch):
    """SQLite's own 'database or disk is full' (the file may not grow by one page)."""
    from index.storage.store import MetadataStore

    index, baseline = built
    src = write_jsonl(tmp_path / "new.jsonl", [
        {"_id": f"new{i}", "text": "hello world " + " ".join(WORDS)} for i in range(1, 200)
    ])
    real_connect = MetadataStore.connect.__func__

    def full_connect(cls, directory, create=False):
        store = real_connect(cls, directory, create)
        pages = store.conn.execute("PRAGMA page_count").fetchone()[0]
        store.conn.execute(f"PRAGMA max_page_count = {pages}")
        return store

    monkeypatch.setattr(MetadataStore, "connect", classmethod(full_connect))
    line = assert_one_line_error(add(runner, index, src))
    assert "disk is full" in line or "No space left on device" in line, line
    monkeypatch.undo()
    assert_unchanged(runner, index, baseline)


def test_disk_full_during_forced_rebuild_keeps_the_old_index(runner, built, tmp_path, tiny_model, monkeypatch):
    index, baseline = built
    src = _new_docs(tmp_path)
    real_write = faiss.write_index
    calls = []

    def write_then_fail(idx, path):
        calls.append(path)
        if len(calls) > 1:  # the empty index of the new build is written, the filled one is not
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(idx, path)

    monkeypatch.setattr(faiss, "write_index", write_then_fail)
    result = invoke(runner, "index", "build", src, "--index", index, "--model", tiny_model, "--force", "-q")
    assert_one_line_error(result, "No space left on device")
    monkeypatch.undo()
    assert len(calls) == 2
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".idx")) == []
    assert_unchanged(runner, index, baseline)
