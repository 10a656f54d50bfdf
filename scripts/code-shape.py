#!/usr/bin/env python3
"""The shape of the code, for before/after notes: largest files, longest functions, import
circles in crirt/, lines of Python and C.   scripts/code-shape.py [REPO]"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def main() -> int:
    repo = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1])
    pkg = repo / "crirt"
    py = [p for p in pkg.rglob("*.py") if "_gen" not in p.parts]
    sizes = sorted(((len(p.read_text().splitlines()), p) for p in py), reverse=True)
    funcs: list[tuple[int, str]] = []
    for p in py:
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                funcs.append((n, f"{p.relative_to(repo)}:{node.name}"))
    funcs.sort(reverse=True)
    c_lines = sum(len(p.read_text().splitlines()) for p in pkg.rglob("*.c"))
    print(f"python lines (crirt/, without _gen): {sum(n for n, _ in sizes)} in {len(py)} files")
    print(f"C lines (crirt/): {c_lines}")
    print("largest files:", ", ".join(f"{p.relative_to(repo)} {n}" for n, p in sizes[:5]))
    print("longest functions:", ", ".join(f"{name} {n}" for n, name in funcs[:5]))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.unit.test_architecture import find_cycle, import_graph

    graph = import_graph(pkg)
    cycle = find_cycle(graph)
    print("import circle:", " -> ".join(cycle) if cycle else "none")
    return 0


if __name__ == "__main__":
    sys.exit(main())
