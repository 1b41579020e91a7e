"""The layout's rules, checked on the source: no import cycles, dependencies one way.

Imports are read with ``ast`` (every ``import`` anywhere in a module: at the
top, inside functions, under ``TYPE_CHECKING``), so a cycle hidden in a
function or a type-only import still counts.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("protocol", "common", "sfu", "groups", "billing", "signaling", "clients")
SERVER_PACKAGES = ("common", "sfu", "groups", "billing", "signaling")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" not in path.parts:
                found[_module_name(path)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The project modules ``name`` imports (``from pkg import mod`` resolves to the module)."""
    out: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                out.add(target)
    return out


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _cycles() -> list[list[str]]:
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
        for w in sorted(GRAPH.get(v, ())):
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


def test_the_graph_sees_the_project() -> None:
    assert len(MODULES) > 60
    assert "protocol.wire" in GRAPH["signaling.ws.session"]


def test_no_import_cycles() -> None:
    assert _cycles() == []


def _reaches(prefixes: tuple[str, ...], module: str) -> list[str]:
    return sorted(t for t in GRAPH[module] if t.split(".")[0] in prefixes)


def test_dependencies_point_one_way() -> None:
    rules = {
        "protocol": ("common", "sfu", "groups", "billing", "signaling", "clients"),
        "common": ("sfu", "groups", "billing", "signaling", "clients"),
        "sfu": ("groups", "billing", "signaling", "clients"),
        "groups": ("sfu", "billing", "signaling", "clients"),
        "billing": ("sfu", "signaling", "clients"),
        "signaling": ("clients",),
    }
    broken = {m: _reaches(rules[m.split(".")[0]], m) for m in GRAPH if m.split(".")[0] in rules}
    assert {m: bad for m, bad in broken.items() if bad} == {}


def test_the_desktop_client_imports_only_the_wire_schema() -> None:
    clients = {m: _reaches(SERVER_PACKAGES, m) for m in GRAPH if m.startswith("clients.")}
    assert {m: bad for m, bad in clients.items() if bad} == {}
