"""The import graph: no module reaches itself through its imports, and every module imports.

The layers themselves are import-linter's contracts in pyproject.toml (`make lint`); this checks
what they do not: a cycle between a package and its own modules, and TYPE_CHECKING or
function-local imports that close a loop (grimp counts every import statement).
"""

from __future__ import annotations

import subprocess
import sys

import grimp
import pytest

PACKAGES = ("toolkit", "serve", "evals")


def import_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    lowest: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = lowest[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if imported not in index:
                visit(imported)
                lowest[module] = min(lowest[module], lowest[imported])
            elif imported in on_stack:
                lowest[module] = min(lowest[module], index[imported])
        if lowest[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return cycles


def test_no_module_imports_itself_through_others():
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    assert len(graph.modules) > 50  # the real packages, not an empty graph
    assert import_cycles(graph) == []


def test_import_cycles_are_found():
    """The checker itself: a loop of three modules, and a package importing its own module back."""
    graph = grimp.ImportGraph()
    for importer, imported in [("a.x", "a.y"), ("a.y", "a.z"), ("a.z", "a.x"), ("b", "b.c")]:
        graph.add_import(importer=importer, imported=imported)
    graph.add_import(importer="b.c", imported="b")
    assert sorted(import_cycles(graph)) == [["a.x", "a.y", "a.z"], ["b", "b.c"]]


@pytest.mark.slow
def test_every_module_imports_on_its_own():
    """Each module imported first, in a fresh interpreter: a moved or renamed module fails here."""
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    modules = sorted(m for m in graph.modules if not m.endswith("__main__"))
    script = (
        "import importlib, subprocess, sys\n"
        "failed = [m for m in sys.argv[1:] if subprocess.run("
        "[sys.executable, '-c', f'import {m}'], capture_output=True).returncode]\n"
        "print(' '.join(failed))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, *modules], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == []
