"""The package's import graph: imports flow one way, heavy libraries stay in their modules.

Parsed from the source (AST), so it sees lazy imports inside functions too: a lazy import
hides a cycle from Python, not from this test.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "vesselseg"

# Lowest first. A module may import modules of its own layer or of a lower one, never a higher
# one. ``tracking`` is a leaf service (MLflow URIs and runs; it imports only the base layer), so
# every stage that records a run may use it.
LAYERS: list[set[str]] = [
    {"errors", "progress", "provenance", "lineage", "config"},
    {"tracking"},
    {"io"},
    {"data", "synth", "inspect", "plots", "view"},
    {"models", "losses"},
    {"bundle"},
    {"training"},
    {"inference"},
    {"metrics"},
    {"pseudo"},
    {"evaluation", "kaggle"},
    {"prepare", "plan"},
    {"registry", "tuning", "mlflow_model"},
    {"cli"},
]
LIBRARY_HOMES = {  # library -> the only top-level parts of the package that may import it
    "mlflow": {"tracking", "registry", "mlflow_model"},
    "optuna": {"tuning"},
    "pytorch_lightning": {"data", "training", "tuning"},
    "lightning": {"data", "training", "tuning"},
}
MAX_MODULE_LINES = 450
MAX_COMMAND_LINES = 30


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_names(name: str, path: Path) -> set[str]:
    """Every dotted name that ``path`` imports (absolute, relative imports resolved)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def internal_graph() -> dict[str, set[str]]:
    mods = modules()

    def resolve(dotted: str) -> str | None:
        while dotted and dotted not in mods:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        targets = {resolve(n) for n in imported_names(name, path) if n.startswith("vesselseg")}
        graph[name] = {t for t in targets if t and t != name and t != "vesselseg"}
    return graph


def part_of(module: str) -> str:
    """``vesselseg.inference.run`` -> ``inference``."""
    return module.split(".")[1] if "." in module else ""


def layer_of(module: str) -> int:
    part = part_of(module)
    for index, layer in enumerate(LAYERS):
        if part in layer:
            return index
    raise AssertionError(f"{module}: its part {part!r} is in no layer of LAYERS; add it")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_sees_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    assert cycles(internal_graph()) == []


def test_every_module_has_a_layer() -> None:
    for module in modules():
        if module != "vesselseg":
            layer_of(module)


def test_imports_flow_one_way() -> None:
    backwards = sorted(
        f"{src} -> {dst}"
        for src, targets in internal_graph().items()
        if src != "vesselseg"
        for dst in targets
        if layer_of(dst) > layer_of(src)
    )
    assert backwards == []


@pytest.mark.parametrize("library", sorted(LIBRARY_HOMES))
def test_heavy_libraries_stay_home(library: str) -> None:
    strays = sorted(
        name
        for name, path in modules().items()
        if part_of(name) not in LIBRARY_HOMES[library]
        and any(n.split(".")[0] == library for n in imported_names(name, path))
    )
    assert strays == []


def test_modules_stay_small() -> None:
    big = {
        name: n
        for name, path in modules().items()
        if (n := path.read_text().count("\n")) > MAX_MODULE_LINES
    }
    assert big == {}


def test_cli_commands_are_thin() -> None:
    """A command parses its options and calls the package; its body (docstring aside) stays
    short, so the work it starts lives where it can be tested and reused."""
    long_bodies = {}
    for path in sorted((PACKAGE / "cli").glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if not isinstance(node, ast.FunctionDef) or not any(
                "command" in ast.unparse(d) for d in node.decorator_list
            ):
                continue
            body = node.body[1:] if ast.get_docstring(node) else node.body
            lines = body[-1].end_lineno - body[0].lineno + 1
            if lines > MAX_COMMAND_LINES:
                long_bodies[node.name] = lines
    assert long_bodies == {}
