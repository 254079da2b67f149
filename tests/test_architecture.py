"""Arrows point down: ``cli -> engine -> tasks -> {checkpoints, components, losses, data, ...}``.

Reads every module's imports from its syntax tree (module level and inside functions alike) and
checks the layering of ../shared/DESIGN.md: the engine imports no task, a task imports neither
the engine nor the CLI nor another task (scene graphs may use detection's public interface),
and the package has no import cycle at module level.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "percepta"
TASKS = ("detection", "scene_graph", "quality")


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m.startswith("percepta")}


MODULES = {_module_name(p): p for p in SRC.rglob("*.py")}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer_violations(module: str, imports: set[str]) -> list[str]:
    """The imports of ``module`` that point up or sideways."""
    here = _layer(module)

    def bad(other: str) -> bool:
        if here == "engine":
            return other in TASKS
        if here not in TASKS:
            return False
        sideways = other in TASKS and other != here
        return other in ("engine", "cli", "demo") or (
            sideways and not (here == "scene_graph" and other == "detection")
        )

    out = [f"{module} imports {i}" for i in sorted(imports) if bad(_layer(i))]
    return out


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles of ``graph`` (module -> imported modules), by depth-first search."""
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                cycles.append(stack[stack.index(n) :] + [n])
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    return cycles


def test_engine_and_tasks_import_only_downwards():
    problems = [v for m, p in MODULES.items() for v in layer_violations(m, _imports(p, False))]
    assert not problems


def test_no_import_cycle_at_module_level():
    graph = {m: {i for i in _imports(p, True) if i in MODULES} for m, p in MODULES.items()}

    def parents(name: str) -> list[str]:  # importing a.b.c runs a/__init__ and a/b/__init__
        parts = name.split(".")
        return [".".join(parts[:k]) for k in range(1, len(parts))]

    for m in list(graph):
        graph[m] |= {
            p
            for i in list(graph[m])
            for p in parents(i)
            if p in MODULES and p != m and not m.startswith(p + ".")
        }
    cycles = find_cycles(graph)
    assert not cycles, " | ".join(" -> ".join(c) for c in cycles)


def test_the_checks_can_fail():
    assert layer_violations("percepta.engine.trainer", {"percepta.detection.centernet"})
    assert layer_violations("percepta.quality.iqt", {"percepta.engine.hooks"})
    assert layer_violations("percepta.detection.x", {"percepta.scene_graph.y"})
    assert not layer_violations("percepta.scene_graph.y", {"percepta.detection.centernet"})
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []
