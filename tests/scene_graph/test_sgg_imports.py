"""The scene-graph modules import each other in one direction only (no cycle, lazy or not)."""

from __future__ import annotations

import ast
from pathlib import Path

import percepta.scene_graph

PACKAGE = Path(percepta.scene_graph.__file__).parent


def _imports(path: Path) -> set[str]:
    """Every ``percepta.scene_graph`` module imported anywhere in ``path`` (functions included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found |= {n for n in names if n.startswith("percepta.scene_graph.")}
    return found


def test_no_import_cycle_between_scene_graph_modules():
    modules = {
        f"percepta.scene_graph.{p.stem}": p for p in PACKAGE.glob("*.py") if p.stem != "__init__"
    }
    graph = {m: {d for d in _imports(p) if d in modules and d != m} for m, p in modules.items()}
    assert "percepta.scene_graph.evaluation" in graph and "percepta.scene_graph.results_io" in graph

    def visit(m: str, stack: tuple[str, ...]) -> None:
        assert m not in stack, "import cycle: " + " -> ".join((*stack[stack.index(m) :], m))
        for d in sorted(graph[m]):
            visit(d, (*stack, m))

    for m in sorted(graph):
        visit(m, ())
