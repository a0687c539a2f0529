"""The package's import layers: cli -> commands -> tui -> engine, and no import circle (lazy,
in-function imports included)."""

from __future__ import annotations

import ast
import subprocess
import sys

from conftest import ROOT

PACKAGE = ROOT / "stop_tui"


def _module_name(path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """Each module of the package -> the package's modules it imports anywhere in its file."""
    files = {_module_name(f): f for f in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                for alias in node.names:  # `from pkg import module` names the module
                    found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base)
        graph[name] = {m for m in found if m in files and m != name}
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return circles


def test_the_circle_finder_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _circles(graph) == [["a", "b", "c"]]


def test_no_import_circle():
    assert _circles(_import_graph()) == []


def test_layers():
    """The engine imports only the engine (and the package's own __init__: its version); the
    TUI never the command line or its commands; commands never cli.py."""
    wrong = []
    for name, imported in _import_graph().items():
        for m in imported:
            if name.startswith("stop_tui.engine") and not m.startswith("stop_tui.engine") and m != "stop_tui":
                wrong.append(f"{name} -> {m}")
            if name.startswith("stop_tui.tui") and m.startswith(("stop_tui.cli", "stop_tui.commands")):
                wrong.append(f"{name} -> {m}")
            if name.startswith("stop_tui.commands") and m == "stop_tui.cli":
                wrong.append(f"{name} -> {m}")
    assert wrong == []


def test_importing_the_tui_launch_imports_no_command_code():
    probe = ("import sys, stop_tui.tui.launch, stop_tui.tui.app\n"
             "print(' '.join(m for m in sys.modules if m.startswith('stop_tui')))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True)
    loaded = out.stdout.split()
    assert "stop_tui.tui.launch" in loaded
    assert [m for m in loaded if m.startswith(("stop_tui.cli", "stop_tui.commands"))] == []
