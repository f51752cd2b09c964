"""The house's shape, checked from the source: no import circle, and imports only point down the layers.

The layers (docs in README.md "Layout"): the pure cores (``fl``, ``ledger``, ``governance``) and the wire
(``protocol``, ``crypto``) know nothing of the processes that use them; ``hub``, ``node`` and ``sim`` are
siblings that never import each other; the CLI, the benchmarks and the orchestration modules sit on top.
Imports under ``if TYPE_CHECKING:`` are annotations only and are not edges.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "consortium"

TOP = ("cli", "bench", "demo", "scenario", "launch")
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "fl": ("hub", "node", "sim", "client", *TOP),
    "ledger": ("hub", "node", "sim", "fl", "client", *TOP),
    "governance": ("hub", "node", "sim", "client", *TOP),
    "protocol": ("hub", "node", "sim", "client", *TOP),
    "ledger_wire": ("hub", "node", "sim", "client", *TOP),
    "members_wire": ("hub", "node", "sim", "client", *TOP),
    "crypto": ("hub", "node", "sim", "fl", "client", *TOP),
    "hub": ("node", "sim", "client", *TOP),
    "node": ("hub", "sim", *TOP),
    "sim": ("hub", "node", "client", *TOP),
    "plan": ("hub", "node", "sim", "client", *TOP),
}
"""For each layer (first name after ``consortium.``), the layers it must not import."""


def modules() -> dict[str, Path]:
    found = {}
    for path in (SRC / PACKAGE).rglob("*.py"):
        if "migrations" in path.parts:
            continue
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _runtime_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, lazy ones included, except those under ``if TYPE_CHECKING:``."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        test = getattr(node, "test", None)
        if isinstance(node, ast.If) and getattr(test, "id", getattr(test, "attr", None)) == "TYPE_CHECKING":
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (``from a import b`` counts ``a.b`` when that is a module)."""
    known = modules()

    def resolve(name: str) -> str | None:
        while name:
            if name in known:
                return name
            name = name.rpartition(".")[0]
        return None

    graph: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _runtime_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base]).strip(".")
                targets = [f"{base}.{alias.name}" for alias in node.names]
            for target in targets:
                if target.split(".")[0] != PACKAGE:
                    continue
                resolved = resolve(target)
                if resolved is not None and resolved != name:
                    graph[name].add(resolved)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_the_graph_sees_the_package() -> None:
    graph = import_graph()
    assert len(graph) > 80
    assert "consortium.fl.core" in graph["consortium.fl.strategies"]


def test_no_import_circle() -> None:
    assert cycles(import_graph()) == []


def test_cycle_finder_finds_a_circle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("lower", sorted(FORBIDDEN))
def test_no_upward_import(lower: str) -> None:
    graph = import_graph()
    upward = sorted(
        f"{module} -> {target}"
        for module, targets in graph.items() if layer(module) == lower
        for target in targets if layer(target) in FORBIDDEN[lower]
    )
    assert upward == []


MAX_LINES = 450
"""A file with many jobs is many modules."""


def test_no_source_file_over_the_line_limit() -> None:
    long = {str(path.relative_to(SRC)): n for path in modules().values()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}
