"""The launch package's modules import each other without loops and only through public names, so that each
module can be read, tested and changed on its own (a loop made `report`, `study` and `study_archive` one
unit in practice)."""

from __future__ import annotations

import ast
from pathlib import Path

LAUNCH = Path(__file__).resolve().parent.parent / "launch"


def _imports() -> dict[str, list[tuple[str, str]]]:
    """launch module -> (imported launch module, imported name) for every `from launch.X import Y`."""
    found: dict[str, list[tuple[str, str]]] = {}
    for path in sorted(LAUNCH.glob("*.py")):
        edges = found.setdefault(f"launch.{path.stem}", [])
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("launch."):
                edges += [(node.module, alias.name) for alias in node.names]
    return found


def test_launch_modules_import_each_other_without_a_loop():
    graph = {mod: sorted({dep for dep, _ in edges}) for mod, edges in _imports().items()}
    done: set[str] = set()

    def visit(mod: str, path: list[str]) -> None:
        for dep in graph.get(mod, []):
            assert dep not in path, "import loop: " + " -> ".join([*path[path.index(dep):], dep])
            if dep not in done:
                visit(dep, [*path, dep])
        done.add(mod)

    for mod in graph:
        visit(mod, [mod])


def test_launch_modules_import_only_public_names_of_each_other():
    private = [f"{mod} imports {dep}.{name}" for mod, edges in _imports().items() for dep, name in edges
               if name.startswith("_")]
    assert not private, private
