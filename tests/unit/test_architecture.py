"""The shape of the package: no import circle anywhere in crirt/, counting every import (at
module level, inside functions, and under TYPE_CHECKING), so that no late import hides one."""

from __future__ import annotations

import ast
from pathlib import Path

CRIRT = Path(__file__).resolve().parents[2] / "crirt"


def _module(path: Path, pkg: Path) -> str:
    rel = path.relative_to(pkg.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(pkg: Path = CRIRT) -> dict[str, set[str]]:
    """Module -> the crirt modules it imports, anywhere in its text."""
    files = {_module(p, pkg): p for p in pkg.rglob("*.py") if "_gen" not in p.parts}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        parent = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = parent.split(".")
                    base = ".".join(up[: len(up) - node.level + 1])
                    base = f"{base}.{node.module}" if node.module else base
                # `from pkg import mod` names a module when one exists by that name.
                names = [f"{base}.{a.name}" for a in node.names] + [base]
            for n in names:
                while n and n not in files:
                    n = n.rpartition(".")[0]
                # A package's __init__ is imported with any of its modules, but a module
                # importing its own package is not a circle of concern here.
                if n and n != mod and not mod.startswith(n + "."):
                    graph[mod].add(n)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import circle, as the list of modules around it, or [] (iterative DFS)."""
    color: dict[str, int] = {}
    for root in sorted(graph):
        if color.get(root):
            continue
        stack: list[tuple[str, list[str]]] = [(root, sorted(graph[root]))]
        path = [root]
        color[root] = 1
        while stack:
            node, todo = stack[-1]
            if not todo:
                stack.pop()
                path.pop()
                color[node] = 2
                continue
            nxt = todo.pop()
            if color.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if not color.get(nxt):
                color[nxt] = 1
                path.append(nxt)
                stack.append((nxt, sorted(graph[nxt])))
    return []


def test_find_cycle_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_the_import_graph_has_no_circle() -> None:
    graph = import_graph()
    assert "crirt.runtime.service" in graph
    assert "crirt.runtime.sandbox" in graph["crirt.runtime.service"]
    assert find_cycle(graph) == []
