"""The package's seams: no import cycle, layered sub-packages, no private reads, light CLI parsing.

These read the source (``ast``), so they fail the moment a change breaks a
rule, whatever the tests of behaviour say. Every import statement counts,
wherever it stands: at module level, inside a function, or under
``if TYPE_CHECKING:`` (a cycle there is still a cycle for a reader).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("index", "search")
MAX_LINES = 400


def package_modules() -> dict[str, Path]:
    """``dotted name -> file`` of every module of the product (index, search, cli)."""
    out = {"cli": ROOT / "cli.py"}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


MODULES = package_modules()


def _imports(tree: ast.AST):
    """Every import node, at any depth: in functions and under ``if TYPE_CHECKING:`` too."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node


def _base(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
    package = package[: len(package) - (node.level - 1)]
    return ".".join(package + ([node.module] if node.module else []))


def imported(module: str) -> list[tuple[str, list[str], int]]:
    """``(imported module, names taken from it, line)`` for each import of ``module``."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    out = []
    for node in _imports(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, [], node.lineno) for alias in node.names]
            continue
        base = _base(module, node)
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            if sub in MODULES:  # "from . import folder": the submodule itself
                out.append((sub, [], node.lineno))
            else:
                out.append((base, [alias.name], node.lineno))
    return out


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module in MODULES:
        for target, _, _ in imported(module):
            while target and target not in MODULES:  # "import index.store.x" -> nearest known module
                target = target.rpartition(".")[0]
            if target and target != module:
                graph[module].add(target)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles, state, path = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_uses(module: str) -> list[str]:
    """Imports of another module's underscore names, and ``x._name`` where x is not self/cls."""
    problems = [f"{module}:{line}: imports {name} from {base}"
                for base, names, line in imported(module) for name in names if _private(name)]
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            owner = node.value
            if not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")):
                problems.append(f"{module}:{node.lineno}: reads {ast.unparse(node)}")
    return problems


def test_the_rules_catch_what_they_should():
    """The checkers themselves: a cycle and private reads are found (so the tests below can fail)."""
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []
    sample = ast.parse("from index.store import _now\nx = index._vectors\ny = self._ok\nz = a.__class__\n")
    attrs = [n.attr for n in ast.walk(sample) if isinstance(n, ast.Attribute) and _private(n.attr)
             and not (isinstance(n.value, ast.Name) and n.value.id in ("self", "cls"))]
    assert attrs == ["_vectors"]
    assert [a.name for n in ast.walk(sample) if isinstance(n, ast.ImportFrom) for a in n.names
            if _private(a.name)] == ["_now"]


def test_the_package_has_no_import_cycle():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


FOUNDATION = {"index.errors", "index.options", "index.records", "index.files"}
ROOMS = ("model", "ann", "ingest", "storage", "lexical", "distributed")
# What each room of index/ may import (besides itself and the foundation), lowest first.
MAY_IMPORT = {
    "foundation": set(),
    "index.model": set(),
    "index.ann": set(),
    "index.ingest": {"index.model"},
    "index.storage": {"index.model", "index.ann", "index.ingest"},
    "index.lexical": {"index.storage"},
    "index.indexer": {"index.model", "index.ann", "index.ingest", "index.storage", "index.lexical"},
    "index": {"index.model", "index.indexer"},  # the package's lazy public names
    "index.distributed": {"index", "index.indexer", *(f"index.{r}" for r in ROOMS)},
}


def room(module: str) -> str | None:
    """The layer ``module`` belongs to: a sub-package of index, the foundation, or None (search, cli)."""
    if module in FOUNDATION:
        return "foundation"
    if module in ("index", "index.indexer"):
        return module
    parts = module.split(".")
    if parts[0] == "index" and len(parts) > 1 and parts[1] in ROOMS:
        return f"index.{parts[1]}"
    return None


def layering_problems(graph: dict[str, set[str]]) -> list[str]:
    problems = []
    for module, targets in graph.items():
        here = room(module)
        for target in sorted(targets):
            there = room(target)
            if module.startswith("index") and not target.startswith("index"):
                problems.append(f"{module} imports {target}: index imports nothing from search or the CLI")
                continue
            if module.startswith("search") and target == "cli":
                problems.append(f"{module} imports the CLI")
            if here is None or there in (here, "foundation"):
                continue
            if there not in MAY_IMPORT[here]:
                problems.append(f"{module} ({here}) imports {target} ({there})")
    return problems


def test_index_is_cut_into_rooms():
    """``ls index/`` shows the concerns; each room says what it owns and what it may import."""
    top = sorted(p.name for p in (ROOT / "index").iterdir() if not p.name.startswith(("_", ".")) or p.name == "__init__.py")
    assert top == sorted(["__init__.py", *ROOMS, *(m.split(".")[1] + ".py" for m in FOUNDATION), "indexer.py"])
    for name in ROOMS:
        doc = ast.get_docstring(ast.parse((ROOT / "index" / name / "__init__.py").read_text(encoding="utf-8")))
        assert doc and "Owns:" in doc and "May import:" in doc, f"index/{name}/__init__.py must say what it owns"


def test_the_layering_rules_catch_what_they_should():
    assert layering_problems({"index.model.encoder": {"index.storage.store"}}) == [
        "index.model.encoder (index.model) imports index.storage.store (index.storage)"]
    assert layering_problems({"index.storage.writer": {"index.model.encoder", "index.errors"}}) == []
    assert layering_problems({"index.ann.flat": {"search.searcher"}})
    # an import inside a function and one under TYPE_CHECKING are both seen
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import a\ndef f():\n    import b\n")
    assert sorted(alias.name for node in _imports(tree) if isinstance(node, ast.Import) for alias in node.names) == [
        "a", "b"]


def test_the_rooms_import_only_what_their_layer_allows():
    problems = layering_problems(import_graph())
    assert not problems, "\n".join(problems)


def test_no_module_reads_another_modules_private_names():
    problems = [p for module in MODULES for p in private_uses(module)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != "cli"))
def test_modules_are_small_and_say_what_they_own(module):
    path = MODULES[module]
    source = path.read_text(encoding="utf-8")
    assert len(source.splitlines()) <= MAX_LINES, f"{path.relative_to(ROOT)} has {len(source.splitlines())} lines"
    assert ast.get_docstring(ast.parse(source)), f"{path.relative_to(ROOT)} has no module docstring"


def test_registered_backends_are_the_cli_choices():
    """One registration line per backend: the CLI's --index-type choices come from it."""
    from index import options
    from index.ann import registry as vectors
    from index.ann.base import VectorIndex

    assert options.INDEX_TYPES == (*options.VECTOR_BACKENDS, "auto")
    for kind in options.VECTOR_BACKENDS:
        cls = vectors.backend(kind)
        assert issubclass(cls, VectorIndex) and cls.kind == kind


def test_parsing_the_command_line_imports_neither_torch_nor_faiss():
    """`semsearch --help` and option parsing stay fast: no heavy import before a command runs."""
    code = ("import sys; from click.testing import CliRunner; import cli; "
            "r = CliRunner().invoke(cli.cli, ['index', 'build', '--help']); assert r.exit_code == 0, r.output; "
            "heavy = sorted(m for m in ('torch', 'faiss', 'transformers') if m in sys.modules); print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout


def test_a_missing_tool_skips_here_and_fails_in_ci(monkeypatch):
    """Browser, Ray and plotting tests skip only where they cannot run: CI installs their tools."""
    import conftest

    monkeypatch.setattr(conftest, "IN_CI", False)
    with pytest.raises(pytest.skip.Exception):
        conftest.require("no_such_module_here", "not installed")
    monkeypatch.setattr(conftest, "IN_CI", True)
    with pytest.raises(pytest.fail.Exception, match="CI installs it"):
        conftest.unavailable("no Chromium here")
    assert conftest.require("json", "always there").dumps([]) == "[]"
