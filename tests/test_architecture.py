"""The tree keeps showing the design: no import circles, the product never imports the tools, modules stay small.

Imports are read from the source (every ``import`` statement, at module level, inside functions and under
``TYPE_CHECKING``), so a circle hidden by a function-level import is still a circle here.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("hub", "shared_protocol", "firmware", "tools")
MAX_HUB_LINES = 500
# hub modules allowed past MAX_HUB_LINES, and why
LONG_MODULES: dict[str, str] = {}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sources() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            out[module_name(path)] = path
    return out


MODULES = sources()


def imports_of(name: str, path: Path) -> Iterator[tuple[str, int, bool]]:
    """(imported internal module, line, at module level?) for every import statement of the module."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    top_level = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            # ``from pkg import sub`` imports the submodule pkg.sub when there is one
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target, node.lineno, id(node) in top_level


GRAPH: dict[str, set[str]] = {name: {t for t, _, _ in imports_of(name, path)} for name, path in MODULES.items()}


def cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(GRAPH[v]):
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

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_is_read() -> None:
    assert "hub.link.ingest" in GRAPH["hub.service.lifecycle"]
    assert "hub.link.marks" in GRAPH["hub.link.gaps"]


def test_no_import_circle() -> None:
    assert cycles() == []


@pytest.mark.parametrize("package", ["hub", "firmware", "shared_protocol"])
def test_the_product_never_imports_the_tools_or_the_tests(package: str) -> None:
    bad = [
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        if name.split(".")[0] == package
        for target in targets
        if target.split(".")[0] in ("tools", "tests")
    ]
    assert bad == []


def test_shared_protocol_and_firmware_import_only_what_runs_on_a_node() -> None:
    allowed = {"shared_protocol": {"shared_protocol"}, "firmware": {"firmware", "shared_protocol"}}
    bad = [
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        if name.split(".")[0] in allowed
        for target in targets
        if target.split(".")[0] not in allowed[name.split(".")[0]]
    ]
    assert bad == []


def test_hub_modules_stay_small() -> None:
    long = {
        name: n
        for name, path in MODULES.items()
        if name.startswith("hub") and (n := len(path.read_text().splitlines())) > MAX_HUB_LINES
    }
    assert {name: n for name, n in long.items() if name not in LONG_MODULES} == {}


def test_the_hub_imports_its_modules_at_the_top() -> None:
    """No import inside a function or under a condition: such imports hid the web's circle before."""
    late = [
        f"{name}:{line} imports {target}"
        for name, path in MODULES.items()
        if name.split(".")[0] in ("hub", "shared_protocol")
        for target, line, top in imports_of(name, path)
        if not top
    ]
    assert late == []
