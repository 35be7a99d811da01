"""The package's import graph: every import goes one way, so each module can be read on its own."""

import ast
from pathlib import Path

import tinylm

PACKAGE = Path(tinylm.__file__).parent


def imported_modules(path: Path) -> set[str]:
    """The tinylm modules a file imports anywhere in it (in functions and TYPE_CHECKING too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tinylm"):
            parts = node.module.split(".")
            found |= {parts[1]} if len(parts) > 1 else {alias.name for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("tinylm.")}
    return found - {path.stem}


def import_graph() -> dict[str, set[str]]:
    """Module name → the package modules it imports."""
    modules = {path.stem: path for path in PACKAGE.glob("*.py")}
    return {name: imported_modules(path) & set(modules) for name, path in modules.items()}


def circle_through(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """A chain of imports that leads from start back to start, or None."""
    stack = [(start, [start])]
    seen = set()
    while stack:
        module, chain = stack.pop()
        for imported in sorted(graph[module]):
            if imported == start:
                return [*chain, start]
            if imported not in seen:
                seen.add(imported)
                stack.append((imported, [*chain, imported]))
    return None


def test_no_module_imports_itself_back():
    graph = import_graph()
    circles = [chain for name in sorted(graph) if (chain := circle_through(graph, name))]
    assert not circles, "import circles: " + "; ".join(" → ".join(c) for c in circles)


def test_the_bottom_layers_import_nothing_above_them():
    graph = import_graph()
    assert graph["config"] == set()
    assert graph["attention"] <= {"config"}
    assert "profiles" not in graph["hardware"]


def test_a_circle_is_found_when_there_is_one():
    assert circle_through({"a": {"b"}, "b": {"c"}, "c": {"a"}}, "a") == ["a", "b", "c", "a"]
    assert circle_through({"a": {"b"}, "b": set()}, "a") is None
