"""The README and the pages under docs/ run: every command block is run, or says why it cannot be.

Every fenced ```bash, ```sh, ```console and ```python block of ``README.md`` and
``docs/*.md`` (but ``docs/tutorial.md``, which ``tests/test_tutorial.py`` runs) is
either run here or marked, on the line just before its fence, with
``<!-- not run: REASON -->`` (a cluster address, a benchmark of hours, ``pip install``).

Fast tests (no model is loaded): every block has a language; every unmarked block
parses and holds nothing that cannot run in a test (``pip install``, a Ray cluster,
the evaluation data, a benchmark, a server left in the foreground), so a new block
that is neither runnable nor marked fails at once; the README's two commands at the
top are the ones ``.ci/run`` runs (``--quiet`` aside); every page is listed in
``docs/README.md`` and on the README; every relative link and anchor resolves.

Slow tests, one per page: the page's unmarked blocks run in order, as a reader
would run them, in one scratch folder holding a copy of ``examples/``, with the
repository on ``PYTHONPATH``, the installed ``semsearch`` command and a model cache
of their own (so that the first use of the embedded model is a first use).
``bash``/``sh`` blocks run with ``bash -e -o pipefail``, ``python`` blocks with this
interpreter; ``console`` blocks (``$ command`` lines, each followed by its output)
must print what the page shows: text exactly (spacing aside), numbers to 0.003,
durations ("3.2 s") not at all, and first-use ``note:`` lines only where the page
shows them. A block that starts ``semsearch serve`` runs it in the background on
the loopback port the page names, replaced by a free one, and stops it itself;
whatever a block leaves running is stopped when it ends.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
TUTORIAL = DOCS / "tutorial.md"  # run by tests/test_tutorial.py
CI = ROOT / ".ci" / "run"
RUNNABLE = ("bash", "sh", "console", "python")
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([^\s`]*)")
NOT_RUN = re.compile(r"^<!--\s*not run:\s*(.*?)\s*-->\s*$")
BLOCK_TIMEOUT_S = 600

# What an unmarked block must not hold: it could not run in a test (or must not).
CANNOT_RUN = [
    (re.compile(r"\bpip install\b"), "installs packages"),
    (re.compile(r"\bray start\b|--ray-address|--engine ray"), "needs a Ray cluster"),
    (re.compile(r"\bHEAD_IP\b|ray://"), "names a cluster address"),
    (re.compile(r"\.\./shared/data|\$D/"), "needs the evaluation data in ../shared/data"),
    (re.compile(r"\bpython3?\s+(-\S+\s+)*bench/"), "runs a benchmark"),
    (re.compile(r"--host\s+0\.0\.0\.0"), "listens on every interface"),
    (re.compile(r"\bpytest\b"), "runs the test suite"),
]


def pages() -> list[Path]:
    """The pages whose blocks this file runs: the README and docs/*.md but the tutorial."""
    return [README] + sorted(p for p in DOCS.glob("*.md") if p != TUTORIAL)


def link_pages() -> list[Path]:
    return [README] + sorted(DOCS.glob("*.md"))


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


@dataclass
class Block:
    page: str  # relative to the repository
    line: int  # of the opening fence, from 1
    lang: str
    code: str
    not_run: str | None  # the reason, when marked
    indent: str = ""

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line} ({self.lang or 'no language'})"


def parse_blocks(text: str, page: str = "<text>") -> tuple[list[Block], list[str]]:
    """The fenced blocks of a Markdown text, and the problems of its markers (a marker not
    followed by a fence, a marker without a reason, an unclosed fence)."""
    lines = text.split("\n")
    blocks, problems = [], []
    i = 0
    while i < len(lines):
        line = lines[i]
        marker = NOT_RUN.match(line.strip())
        if marker:
            nxt = lines[i + 1] if i + 1 < len(lines) else ""
            if not FENCE.match(nxt):
                problems.append(f"{page}:{i + 1}: a 'not run' marker must be the line just before a fence")
            if not marker.group(1):
                problems.append(f"{page}:{i + 1}: a 'not run' marker must say why")
        elif "not run" in line and line.lstrip().startswith("<!--"):
            problems.append(f"{page}:{i + 1}: write the marker as <!-- not run: REASON -->")
        fence = FENCE.match(line)
        if not fence:
            i += 1
            continue
        indent, ticks, lang = fence.group(1), fence.group(2), fence.group(3).lower()
        before = lines[i - 1].strip() if i else ""
        reason = NOT_RUN.match(before)
        body, j = [], i + 1
        while j < len(lines) and not (lines[j].strip().startswith(ticks[0] * len(ticks))
                                      and set(lines[j].strip()) <= {ticks[0]}):
            body.append(lines[j][len(indent):] if lines[j].startswith(indent) else lines[j])
            j += 1
        if j == len(lines):
            problems.append(f"{page}:{i + 1}: a fence that is never closed")
        blocks.append(Block(page, i + 1, lang, "\n".join(body) + "\n", reason.group(1) if reason else None, indent))
        i = j + 1
    return blocks, problems


def page_blocks(path: Path) -> list[Block]:
    return parse_blocks(path.read_text(encoding="utf-8"), rel(path))[0]


def console_steps(code: str) -> list[tuple[str, str]]:
    """``(command, expected output)`` of each ``$ `` line of a console block (a trailing
    backslash continues a command on the next line)."""
    out: list[tuple[str, list[str]]] = []
    lines = code.rstrip("\n").split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("$ "):
            command = line[2:]
            while command.endswith("\\") and i + 1 < len(lines):
                i += 1
                command += "\n" + lines[i]
            out.append((command, []))
        elif out:
            out[-1][1].append(line)
        else:
            out.append(("", [line]))  # output before any command: a malformed block
        i += 1
    return [(c, "\n".join(e)) for c, e in out]


def script_of(block: Block) -> str:
    """The shell script or program a block runs as."""
    if block.lang == "console":
        return "\n".join(c for c, _ in console_steps(block.code)) + "\n"
    return block.code


def runnable_problems(block: Block) -> list[str]:
    """Why an unmarked block could not run here ([] when it can)."""
    where = block.where
    if block.lang not in RUNNABLE:
        return []
    problems = []
    if block.indent:
        problems.append(f"{where}: an indented fence (in a list?) is not run; put the block at the margin")
    script = script_of(block)
    if block.lang == "console":
        steps = console_steps(block.code)
        if not steps or any(not command for command, _ in steps):
            problems.append(f"{where}: a console block holds `$ command` lines, each followed by its output")
    if block.lang == "python":
        try:
            compile(script, where, "exec")
        except SyntaxError as exc:
            problems.append(f"{where}: not valid Python: {exc}")
    else:
        checked = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
        if checked.returncode:
            problems.append(f"{where}: not valid bash: {checked.stderr.strip()}")
    for pattern, why in CANNOT_RUN:
        if pattern.search(script):
            problems.append(f"{where}: {why}: mark it with <!-- not run: REASON --> on the line before the fence")
    for line in script.splitlines():
        command = line.split(" #")[0].strip()
        if re.search(r"\bsemsearch serve\b", command) and not command.endswith("&"):
            problems.append(f"{where}: `semsearch serve` blocks: start it in the background (`&`) and stop it, "
                            "or mark the block not run")
    if re.search(r"\bsemsearch serve\b", script) and not re.search(r"\bkill\b", script):
        problems.append(f"{where}: a block that starts `semsearch serve` must stop it (`kill $!`)")
    return problems


# --- comparing a console block's output --------------------------------------------------------
NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")
DURATION = re.compile(r"\b\d+(?:\.\d+)? s\b")
TOLERANCE = 0.003


def same_output(got: str, want: str) -> bool:
    """Text exactly (spacing aside), numbers to TOLERANCE, durations not at all; ``note:`` lines
    (first-use notices, which depend on the model cache) only where the page shows them."""
    want_lines = want.splitlines()
    got_lines = [g for g in got.splitlines() if not g.startswith("note: ") or g in want_lines]
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


# --- links ---------------------------------------------------------------------------------------
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_SPAN = re.compile(r"`[^`\n]*`")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|<[^>]+>", "", heading.strip()).lower()
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = "".join(c for c in text if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    out, seen = set(), {}
    in_fence = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        m = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if m and not in_fence:
            base = slug(m.group(2))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(path: Path) -> list[tuple[int, str]]:
    """``(line, target)`` of every Markdown link and image outside code."""
    out, in_fence = [], False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if not in_fence:
            out += [(number, m.group(1)) for m in LINK.finditer(CODE_SPAN.sub("", line))]
    return out


def link_problems(path: Path, root: Path = ROOT) -> list[str]:
    """Links of ``path`` to a file that does not exist, lies outside ``root``, or has no such heading."""
    problems = []
    for number, target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file, _, fragment = target.partition("#")
        resolved = (path.parent / file).resolve() if file else path.resolve()
        where = f"{path.relative_to(root)}:{number}: {target}"
        if not resolved.exists():
            problems.append(f"{where}: no such file")
        elif root.resolve() not in resolved.parents:
            problems.append(f"{where}: points outside the repository")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            problems.append(f"{where}: no heading with that anchor in {resolved.relative_to(root.resolve())}")
    return problems


# --- fast tests ----------------------------------------------------------------------------------
def test_every_block_is_run_here_or_says_why_not():
    problems, counted = [], {"run": 0, "not run": 0}
    for path in pages():
        blocks, marker_problems = parse_blocks(path.read_text(encoding="utf-8"), rel(path))
        problems += marker_problems
        for block in blocks:
            if not block.lang:
                problems.append(f"{block.where}: a fenced block needs a language (```bash, ```text, ...)")
                continue
            if block.lang not in RUNNABLE:
                continue
            if block.not_run is not None:
                counted["not run"] += 1
            else:
                counted["run"] += 1
                problems += runnable_problems(block)
    assert not problems, "\n".join(problems)
    assert counted["run"] >= 10, counted  # the pages lost their runnable blocks


def test_the_tutorial_is_left_to_its_own_test():
    assert TUTORIAL not in pages() and TUTORIAL.exists()
    assert (ROOT / "tests" / "test_tutorial.py").exists()


def _ci_commands() -> list[str]:
    """The pip and pytest command lines of .ci/run, without ``--quiet``."""
    out = []
    for line in CI.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line.startswith(("pip install", "python -m pytest")):
            out.append(" ".join(w for w in shlex.split(line, posix=False) if w != "--quiet"))
    return out


def test_the_readme_commands_at_the_top_are_the_ones_ci_runs():
    blocks = page_blocks(README)
    install_and_run, tests = (b.code.strip() for b in blocks[:2])
    assert blocks[0].line < 10 and blocks[1].line < 20, "the two commands must stay at the top of the README"
    assert "\n" not in install_and_run and "\n" not in tests, "each is one command line"
    ci = _ci_commands()
    assert len(ci) == 2, ci
    ci_install, ci_tests = ci
    assert tests == f"{ci_install} && {ci_tests}", (tests, ci)
    # the first command installs the same way, without the test extra, then runs the tour's first search
    torch_pin, package = ci_install.split(" && ")
    assert install_and_run.startswith(f"{torch_pin} && {package.replace(chr(39) + '.[test]' + chr(39), '.')} && ")
    assert "semsearch index build examples/faq.jsonl" in install_and_run and "semsearch query" in install_and_run


def test_every_page_is_listed_in_the_docs_index_and_on_the_readme():
    listed = {(DOCS / target.partition("#")[0]).resolve() for _, target in links(DOCS / "README.md")}
    from_readme = {(ROOT / target.partition("#")[0]).resolve() for _, target in links(README)}
    missing = [rel(p) for p in sorted(DOCS.glob("*.md")) if p.name != "README.md" and p.resolve() not in listed]
    assert not missing, f"not listed in docs/README.md: {missing}"
    unlinked = [rel(p) for p in sorted(DOCS.glob("*.md")) if p.resolve() not in from_readme]
    assert not unlinked, f"not linked from README.md: {unlinked}"


def test_every_relative_link_resolves():
    problems = [p for path in link_pages() for p in link_problems(path)]
    assert not problems, "\n".join(problems)


def test_the_readme_stays_a_front_page():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines: move detail to a page under docs/"


def test_the_checks_catch_what_they_should(tmp_path):
    text = ("<!-- not run: a cluster -->\n```bash\nray start --head\n```\n\n"
            "```bash\npip install semsearch\n```\n\n"
            "```console\n$ echo a \\\n  b\na b\n```\n\n"
            "```python\nprint(\n```\n\n"
            "```bash\nsemsearch serve --index x --port 8000\n```\n\n"
            "<!-- not run: -->\n```sh\ntrue\n```\n\n<!-- not run: dangling -->\ntext\n\n```\nbare\n```\n")
    blocks, problems = parse_blocks(text, "t.md")
    assert [b.lang for b in blocks] == ["bash", "bash", "console", "python", "bash", "sh", ""]
    assert blocks[0].not_run == "a cluster" and blocks[1].not_run is None
    assert any("must say why" in p for p in problems) and any("just before a fence" in p for p in problems)
    assert any("Ray cluster" in p for p in runnable_problems(blocks[0]))  # hence its marker
    assert any("installs packages" in p for p in runnable_problems(blocks[1]))
    assert runnable_problems(blocks[2]) == [] and console_steps(blocks[2].code) == [("echo a \\\n  b", "a b")]
    assert any("not valid Python" in p for p in runnable_problems(blocks[3]))
    assert any("in the background" in p for p in runnable_problems(blocks[4]))
    assert same_output("note: first use\ncosine 0.941 in 0.6 s", "cosine 0.942 in 3.1 s")
    assert not same_output("cosine 0.941", "cosine 0.951") and not same_output("a\nb", "a")
    assert slug("Serving: `semsearch serve`") == "serving-semsearch-serve"
    assert slug("Filters, hybrid retrieval, batches of queries") == "filters-hybrid-retrieval-batches-of-queries"
    page = tmp_path / "docs" / "p.md"
    page.parent.mkdir()
    page.write_text("# Top\n[ok](p.md#top) [bad](nowhere.md) [anchor](#nope) `[code](x.md)` [up](../x.md)\n"
                    "```bash\n[in](code.md)\n```\n", encoding="utf-8")
    (tmp_path / "x.md").write_text("x\n", encoding="utf-8")
    found = link_problems(page, root=tmp_path / "docs")
    assert len(found) == 3, found
    assert "nowhere.md: no such file" in found[0] and "#nope: no heading" in found[1] and "outside" in found[2]


# --- slow tests: the blocks run --------------------------------------------------------------------
def runnable_blocks(path: Path) -> list[Block]:
    return [b for b in page_blocks(path) if b.lang in RUNNABLE and b.not_run is None]


PAGES_TO_RUN = [p for p in pages() if runnable_blocks(p)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def with_free_ports(script: str) -> str:
    """The loopback ports a block names (``--port N``, ``127.0.0.1:N``), each replaced by a free one."""
    ports = set(re.findall(r"--port\s+(\d+)", script)) | set(re.findall(r"127\.0\.0\.1:(\d+)", script))
    for port in ports:
        new = str(free_port())
        script = re.sub(rf"(?<=--port )({port})\b", new, script)
        script = re.sub(rf"(?<=127\.0\.0\.1:)({port})\b", new, script)
    return script


@pytest.fixture(scope="session")
def docs_model_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("docs-model-cache")


def scratch_env(cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("SEMSEARCH_INDEX", "SEMSEARCH_SERVER", "SEMSEARCH_MODEL")}
    env.update(PYTHONUNBUFFERED="1", COLUMNS="100", SEMSEARCH_CACHE=str(cache),
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    return env


def run_block(block: Block, cwd: Path, env: dict[str, str], n: int) -> tuple[int, str]:
    """Run one block in ``cwd``; returns (exit status, standard output and error together). Whatever
    it leaves running (a server started with ``&``) is stopped when it ends."""
    script = with_free_ports(script_of(block))
    if block.lang == "python":
        program = cwd / f".block-{n}.py"
        program.write_text(script, encoding="utf-8")
        argv = [sys.executable, str(program)]
    else:
        argv = ["bash", "-e", "-o", "pipefail", "-c", script]
    log = cwd / f".block-{n}.out"
    with open(log, "wb") as out:  # a file, not a pipe: a server left behind cannot hold the test up
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            code = proc.wait(timeout=BLOCK_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            code = 124
        finally:
            for sig in (signal.SIGTERM, signal.SIGKILL):  # the block's own process group, nothing else
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
    return code, log.read_text(encoding="utf-8", errors="replace")


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("path", PAGES_TO_RUN, ids=[rel(p) for p in PAGES_TO_RUN])
def test_the_blocks_of_a_page_run(path, tmp_path, docs_model_cache):
    blocks = runnable_blocks(path)
    if any(re.search(r"\bcurl\b", b.code) for b in blocks) and shutil.which("curl") is None:
        pytest.skip(f"{rel(path)} talks to a server with curl, which is not installed here")
    cwd = tmp_path.resolve()
    shutil.copytree(ROOT / "examples", cwd / "examples")
    env = scratch_env(docs_model_cache)
    for n, block in enumerate(blocks):
        code, output = run_block(block, cwd, env, n)
        shown = f"{block.where}:\n{block.code}--- printed:\n{output[-4000:]}"
        assert code == 0, f"exit status {code}: {shown}"
        assert '{"error"' not in output, f"the server answered an error: {shown}"
        if block.lang == "console":
            want = "\n".join(e for _, e in console_steps(block.code) if e)
            got = output.rstrip("\n").replace(f"{cwd}/", "./")
            assert same_output(got, want), f"{shown}\n--- the page shows:\n{want}"
