"""docs/tutorial.md runs: every command in it is run, in order, and must print what the page shows.

The page's ```console blocks hold commands (lines starting with ``$ ``, continued by a trailing
backslash) each followed by its output (standard output and error together). The commands run in
one scratch folder with ``tests/tiny_model.py`` at hand, as a reader in the project folder would
run them. Outputs are compared line by line: text exactly (spacing aside), numbers to 0.003, and
durations ("0.6 s") not at all, so the page can never drift from the code. The scratch folder's
path, where a message names a model folder in it, is shown as ".".

Refresh the outputs after a deliberate change (and read the diff):

    python tests/test_tutorial.py --write
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIAL = ROOT / "docs" / "tutorial.md"
BLOCK = re.compile(r"^```console\n(.*?)^```\n", re.S | re.M)
NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")
DURATION = re.compile(r"\b\d+(?:\.\d+)? s\b")
TOLERANCE = 0.003


def steps(text: str) -> list[tuple[str, str]]:
    """``(command, expected output)`` of every command on the page, in order."""
    out = []
    for block in BLOCK.findall(text):
        command, expected, lines = None, [], block.splitlines()
        i = 0
        while i < len(lines):
            line = lines[i]
            if line.startswith("$ "):
                if command is not None:
                    out.append((command, "\n".join(expected)))
                command, expected = line[2:], []
                while command.endswith("\\") and i + 1 < len(lines):
                    i += 1
                    command = command + "\n" + lines[i]  # bash reads the backslash-newline itself
            else:
                expected.append(line)
            i += 1
        if command is not None:
            out.append((command, "\n".join(expected)))
    return out


def run_step(command: str, cwd: Path) -> tuple[int, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "100"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    done = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=600)
    # A model folder is named by its absolute path: the scratch folder's reads as "." on the page.
    return done.returncode, done.stdout.rstrip("\n").replace(f"{cwd}/", "./")


def scratch(tmp: Path) -> Path:
    (tmp / "tests").mkdir(parents=True)
    (tmp / "tests" / "tiny_model.py").symlink_to(ROOT / "tests" / "tiny_model.py")
    return tmp


def same(got: str, want: str) -> bool:
    got_lines, want_lines = got.splitlines(), want.splitlines()
    if len(got_lines) != len(want_lines):
        return False
    for g, w in zip(got_lines, want_lines):
        g, w = DURATION.sub("<t> s", g), DURATION.sub("<t> s", w)
        if NUMBER.sub("#", g).split() != NUMBER.sub("#", w).split():
            return False
        for a, b in zip(NUMBER.findall(g), NUMBER.findall(w)):
            if abs(float(a) - float(b)) > TOLERANCE * max(1.0, abs(float(b))):
                return False
    return True


@pytest.mark.slow
@pytest.mark.integration
def test_every_command_of_the_tutorial_prints_what_the_page_shows(tmp_path):
    cwd = scratch(tmp_path.resolve())
    found = steps(TUTORIAL.read_text(encoding="utf-8"))
    assert len(found) >= 12, "the tutorial lost its commands"
    for command, want in found:
        code, got = run_step(command, cwd)
        assert code == 0, f"{command!r} failed ({code}):\n{got}"
        assert same(got, want), f"{command!r} printed:\n{got}\n--- the page shows:\n{want}"


def test_the_comparison_can_fail():
    assert same("cosine 0.941  in 0.6 s", "cosine 0.942  in 3.1 s")
    assert not same("cosine 0.941", "cosine 0.951")
    assert not same("note: kept", "warning: kept")
    assert not same("a\nb", "a")
    assert steps("```console\n$ echo a \\\n  b\na b\n```\n") == [("echo a \\\n  b", "a b")]


def write() -> None:
    """Run every command and put what it printed under it on the page."""
    text = TUTORIAL.read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory() as tmp:
        cwd = scratch(Path(tmp).resolve())

        def fill(match: re.Match) -> str:
            out = []
            for command, _ in steps(match.group(0)):
                code, got = run_step(command, cwd)
                if code:
                    sys.exit(f"{command!r} failed ({code}):\n{got}")
                out += ["$ " + command] + ([got] if got else [])
            return "```console\n" + "\n".join(out) + "\n```\n"

        TUTORIAL.write_text(BLOCK.sub(fill, text), encoding="utf-8")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit(__doc__)
    write()
