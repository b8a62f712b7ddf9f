"""The semsearch command, through click's CliRunner and once through the installed script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from cli import cli

DOCS = [
    {"_id": "pw", "title": "", "text": "how do i reset my password", "metadata": {"lang": "en"}},
    {"_id": "bank", "title": "river", "text": "the bank of the river", "metadata": {"lang": "en"}},
    {"_id": "boat", "text": "배를 타고 바다로 갔다", "metadata": {"lang": "ko"}},
    {"_id": "fox", "text": "the quick brown fox jumps over the lazy dog", "metadata": {"lang": "en"}},
]


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in DOCS), encoding="utf-8")
    return path


@pytest.fixture
def built(runner, corpus, tiny_model, tmp_path):
    index = tmp_path / "idx"
    result = runner.invoke(cli, ["index", "build", str(corpus), "--index", str(index), "--model", tiny_model, "-q"])
    assert result.exit_code == 0, result.output
    return index


def run_ok(runner, args, **kw):
    result = runner.invoke(cli, args, **kw)
    assert result.exit_code == 0, result.output
    return result


def assert_one_line_error(result, pattern: str) -> None:
    assert result.exit_code != 0
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = [l for l in result.output.strip().splitlines() if not l.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert pattern in lines[0], lines[0]
    assert "Traceback" not in result.output


def all_commands(group: click.Group, prefix=()):
    for name, command in group.commands.items():
        yield prefix + (name,), command
        if isinstance(command, click.Group):
            yield from all_commands(command, prefix + (name,))


def test_every_command_has_help_with_an_example(runner):
    for path, command in all_commands(cli):
        result = run_ok(runner, [*path, "--help"])
        assert command.help and "Example" in result.output, path


def test_build_reports_and_info(runner, built):
    info = json.loads(run_ok(runner, ["index", "info", "--index", str(built), "--json"]).output)
    assert info["documents"] == 4 and info["passages"] == info["vectors"] == 4
    assert info["layer"] == -2 and info["pooling"] == "mean"
    text = run_ok(runner, ["index", "info", "--index", str(built)]).output
    assert "documents" in text and "layer" in text


def test_index_from_environment_variable(runner, built):
    result = runner.invoke(cli, ["index", "info", "--json"], env={"SEMSEARCH_INDEX": str(built)})
    assert result.exit_code == 0 and json.loads(result.output)["documents"] == 4


def test_query_text_and_json(runner, built):
    out = run_ok(runner, ["query", "the bank of the river", "--index", str(built), "-k", "2"]).output
    assert out.splitlines()[0].split()[2] == "bank"
    data = json.loads(run_ok(runner, ["query", "river the bank of the river", "--index", str(built), "--json"]).output)
    first = data["hits"][0]
    assert first["id"] == "bank" and first["text"] == "river the bank of the river"
    assert set(first) == {"id", "score", "text", "metadata", "passage"}
    assert first["passage"]["start"] == 0 and first["metadata"] == {"lang": "en", "title": "river"}


def test_query_where_filter(runner, built):
    data = json.loads(run_ok(runner, ["query", "the fox", "--index", str(built), "--where", "lang=ko", "--json"]).output)
    assert [h["id"] for h in data["hits"]] == ["boat"]


def test_queries_file_prints_one_json_line_per_query(runner, built, tmp_path):
    qfile = tmp_path / "q.jsonl"
    qfile.write_text('{"_id": "q1", "text": "the bank of the river"}\n{"_id": "q2", "text": "배를 타고 바다로 갔다"}\n',
                     encoding="utf-8")
    lines = run_ok(runner, ["query", "--queries", str(qfile), "--json", "--index", str(built), "-k", "3"]).output.splitlines()
    rows = [json.loads(l) for l in lines]
    assert [r["query_id"] for r in rows] == ["q1", "q2"]
    assert rows[0]["query"] == "the bank of the river" and len(rows[0]["hits"]) == 3
    assert rows[1]["hits"][0]["id"] == "boat"


def test_add_delete_rebuild(runner, built, tmp_path, tiny_model):
    extra = tmp_path / "extra.csv"
    extra.write_text("id,text,lang\nnew,hello world,en\npw,where is my invoice,en\n", encoding="utf-8")
    result = run_ok(runner, ["index", "add", str(extra), "--index", str(built), "-q"])
    assert "1 added, 1 updated" in result.output
    result = run_ok(runner, ["index", "delete", "fox", "ghost", "--index", str(built)])
    assert "deleted 1" in result.output and "ghost" in result.output
    result = run_ok(runner, ["index", "rebuild", "--index", str(built), "--layer", "-1", "-q"])
    assert "layer -1" in result.output
    info = json.loads(run_ok(runner, ["index", "info", "--index", str(built), "--json"]).output)
    assert info["layer"] == -1 and info["documents"] == 4 and info["vectors"] == 4
    data = json.loads(run_ok(runner, ["query", "hello world", "--index", str(built), "--json"]).output)
    assert data["hits"][0]["id"] == "new" and data["hits"][0]["metadata"] == {"lang": "en"}


def test_build_refuses_to_overwrite_without_force(runner, built, corpus, tiny_model):
    result = runner.invoke(cli, ["index", "build", str(corpus), "--index", str(built), "--model", tiny_model])
    assert_one_line_error(result, "--force")
    run_ok(runner, ["index", "build", str(corpus), "--index", str(built), "--model", tiny_model, "--force", "-q"])


def test_build_from_stdin_lines_and_text_folder(runner, tmp_path, tiny_model):
    index = tmp_path / "stdin-idx"
    run_ok(runner, ["index", "build", "-", "--index", str(index), "--model", tiny_model, "-q"],
           input="the bank of the river\nhello world\n")
    data = json.loads(run_ok(runner, ["query", "hello world", "--index", str(index), "--json"]).output)
    assert data["hits"][0]["id"] == "2"
    folder = tmp_path / "notes"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.md").write_text("# the quick brown fox", encoding="utf-8")
    (folder / "sub" / "b.txt").write_text("배를 먹었다", encoding="utf-8")
    run_ok(runner, ["index", "build", str(folder), "--index", str(tmp_path / "n"), "--model", tiny_model, "-q"])
    data = json.loads(run_ok(runner, ["query", "배를 먹었다", "--index", str(tmp_path / "n"), "--json"]).output)
    assert data["hits"][0]["id"] == "sub/b.txt"


def test_embed_prints_vectors_in_input_order(runner, tiny_model, tmp_path):
    out = run_ok(runner, ["embed", "the bank", "hello world", "the bank", "--model", tiny_model]).output
    rows = [json.loads(l) for l in out.splitlines()]
    assert [r["id"] for r in rows] == ["0", "1", "2"]
    assert len(rows[0]["vector"]) == 32 and rows[0]["vector"] == rows[2]["vector"] != rows[1]["vector"]
    lines = tmp_path / "s.txt"
    lines.write_text("the bank\nhello world\n", encoding="utf-8")
    out2 = run_ok(runner, ["embed", "--input", str(lines), "--model", tiny_model, "--layer", "-2"]).output
    rows2 = [json.loads(l) for l in out2.splitlines()]
    assert [r["id"] for r in rows2] == ["1", "2"] and rows2[0]["vector"] == rows[0]["vector"]
    out3 = run_ok(runner, ["embed", "the bank", "--model", tiny_model, "--layer", "-1"]).output
    assert json.loads(out3)["vector"] != rows[0]["vector"]


def test_eval_prints_metrics(runner, built, tmp_path):
    q = tmp_path / "queries.jsonl"
    q.write_text('{"_id": "q1", "text": "the bank of the river"}\n{"_id": "q2", "text": "the quick brown fox jumps"}\n')
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nq1\tbank\t1\nq2\tfox\t1\n")
    data = json.loads(run_ok(runner, ["eval", "--queries", str(q), "--qrels", str(qrels), "--index", str(built), "--json"]).output)
    assert data["queries"] == 2 and data["recall@100"] == 1.0 and 0 < data["ndcg@10"] <= 1
    table = run_ok(runner, ["eval", "--queries", str(q), "--qrels", str(qrels), "--index", str(built)]).output
    assert "nDCG@10" in table and "layer -2 mean" in table


@pytest.mark.parametrize(
    "args, message",
    [
        (["query", "x", "--index", "{tmp}/none"], "no semsearch index"),
        (["index", "info", "--index", "{tmp}/none"], "no semsearch index"),
        (["index", "build", "{tmp}/missing.jsonl", "--index", "{tmp}/i"], "no such file"),
        (["index", "build", "{corpus}", "--index", "{tmp}/i", "--id-field", "nope", "--model", "{model}"], "nope"),
        (["index", "build", "{corpus}", "--index", "{tmp}/i", "--model", "{tmp}/no-model-here/"], "no-model-here"),
        (["index", "build", "{corpus}", "--index", "{tmp}/i", "--model", "{model}", "--layer", "9"], "out of range"),
        (["query", "x", "--index", "{tmp}/idx", "--where", "novalue"], "key=value"),
        (["query", "x", "--index", "{tmp}/idx", "-k", "0"], "k must be"),
        (["query", "--index", "{tmp}/idx"], "TEXT or --queries"),
    ],
)
def test_user_errors_are_one_line(runner, built, corpus, tiny_model, tmp_path, args, message):
    args = [a.format(tmp=tmp_path, corpus=corpus, model=tiny_model) for a in args]
    assert_one_line_error(runner.invoke(cli, args), message)


def test_bad_input_line_is_named_and_nothing_is_lost(runner, built, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"_id": "ok", "text": "fine"}\n{"_id": "broken", "text": \n')
    result = runner.invoke(cli, ["index", "add", str(bad), "--index", str(built)])
    assert_one_line_error(result, "bad.jsonl:2")
    info = json.loads(run_ok(runner, ["index", "info", "--index", str(built), "--json"]).output)
    assert info["documents"] >= 4


@pytest.mark.slow
def test_installed_console_script(tmp_path, corpus, tiny_model):
    beside_python = os.path.join(os.path.dirname(sys.executable), "semsearch")
    exe = shutil.which("semsearch") or (beside_python if os.path.exists(beside_python) else None)
    assert exe, "the semsearch command is not installed (pip install -e .)"
    index = str(tmp_path / "idx")
    env = {**os.environ, "SEMSEARCH_INDEX": index}
    subprocess.run([exe, "index", "build", str(corpus), "--model", tiny_model, "-q"], check=True, env=env,
                   capture_output=True, timeout=300)
    out = subprocess.run([exe, "query", "the bank of the river", "--json"], check=True, env=env,
                         capture_output=True, text=True, timeout=300).stdout
    assert json.loads(out)["hits"][0]["id"] == "bank"
    bad = subprocess.run([exe, "query", "x", "--index", str(tmp_path / "none")], env=env,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and bad.stderr.startswith("Error: ") and "Traceback" not in bad.stderr
