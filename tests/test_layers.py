"""Layers that only look down: every import inside ``llm_supervisor`` (``TYPE_CHECKING`` ones
included: a cycle hidden from the interpreter is still a cycle) goes to its own layer or one
below. The layers, lowest first:

    base      errors, states, causes, timefmt, names, pci, logsetup, tiers — no dependencies
    rules     config, policy, decide — what is configured, and the pure decision
    parts     host, systemd, checks, records, diff, reconcile — facts, effects, records and
              the reload's plan, on plain data
    engine    engine, actuator, intents — one engine's loop and what its decisions do
    surface   daemon, supervision, control, tools — the lifecycle, the engines under
              supervision, and the commands

The simulated engine is a program of its own: it may use ``names`` and ``pci`` only.

``UP`` lists imports that point up (none now): a new one fails, and so does one that is gone
but still listed.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "llm_supervisor"

LAYERS = {
    "errors": 0, "states": 0, "causes": 0, "timefmt": 0, "names": 0, "logsetup": 0, "tiers": 0,
    "pci": 0,
    "config": 1, "policy": 1, "decide": 1,
    "host": 2, "systemd": 2, "checks": 2, "records": 2, "diff": 2, "reconcile": 2,
    "engine": 3, "actuator": 3, "intents": 3,
    "daemon": 4, "supervision": 4, "control": 4, "tools": 4,
}
SEPARATE = {"simengine": {"names", "pci"}}

# (importing module, imported module)
UP: set[tuple[str, str]] = set()
# the pure decision imports no pydantic (the config's schema)
PURE = {"llm_supervisor.decide"}
IMPURE_NOW: set[tuple[str, str]] = set()
# modules that import each other, however far round (none)
CIRCLES_NOW: set[frozenset[str]] = set()


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Each module's imports of the package (``from x import y`` where y is a module counts
    as y)."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        found = graph.setdefault(module_name(path), set())
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                    and node.module.split(".")[0] == "llm_supervisor":
                if node.module != "llm_supervisor":  # `from llm_supervisor import x`: x
                    found.add(node.module)
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    as_path = PACKAGE.parent / full.replace(".", "/")
                    if as_path.with_suffix(".py").exists() or as_path.is_dir():
                        found.add(full)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("llm_supervisor."))
    return graph


def unit(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def test_every_unit_of_the_package_has_a_layer():
    units = {unit(m) for m in imports()} - {""}
    assert units == set(LAYERS) | set(SEPARATE)


def test_imports_only_look_down():
    up = set()
    for module, targets in imports().items():
        source = unit(module)
        for target in targets:
            if source in SEPARATE:
                assert unit(target) in SEPARATE[source] | {source}, (module, target)
            elif unit(target) and LAYERS[unit(target)] > LAYERS.get(source, 4):
                up.add((module, target))
    assert up - UP == set(), f"imports that point up a layer: {sorted(up - UP)}"
    assert UP - up == set(), f"no longer there, take them off UP: {sorted(UP - up)}"


def test_the_decision_is_pure():
    found = {(m, t) for m, targets in imports().items() if m in PURE for t in targets
             if unit(t) == "config"}
    assert found == IMPURE_NOW


def circles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """The import circles: strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: set[frozenset[str]] = set()

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in graph:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                found.add(frozenset(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_circles_between_modules():
    assert circles(imports()) == CIRCLES_NOW, sorted(map(sorted, circles(imports())))
