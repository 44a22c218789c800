"""The package's layering, checked on its source: every import (at the top of a module or inside a function) is
an edge from one module to another, and no edge may point up a layer or close a loop.

The layers, from the bottom (docs/architecture.md):

    errors ← utils ← config ← algos (torch alone) ← models, data ← feedback, rollout ← tasks ← eval ← engine ← recipes ← cli

(a task's gold may be a verifier: tasks sit above rollout, which never imports them)
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# what each top-level part of tether may import, besides itself (tether's own modules only)
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "utils": {"errors"},
    "config": {"errors", "utils"},
    "algos": set(),
    "models": {"errors", "utils", "config", "algos", "tether"},
    "data": {"errors", "utils", "config"},
    "feedback": {"errors", "utils", "config", "data"},
    "tasks": {"errors", "utils", "config", "data", "rollout"},
    "rollout": {"errors", "utils", "config", "algos", "models", "data"},
    "eval": {"errors", "utils", "config", "algos", "models", "data", "rollout", "feedback", "tasks"},
    "plan": {"errors", "utils", "config", "data"},
    "engine": {"errors", "utils", "config", "algos", "models", "data", "rollout", "feedback", "tasks", "eval"},
    "recipes": {"errors", "utils", "config", "algos", "models", "data", "rollout", "feedback", "tasks", "eval",
                "engine", "plan"},
    "cli": {"errors", "utils", "config", "algos", "models", "data", "rollout", "feedback", "tasks", "eval", "engine",
            "recipes", "plan", "tether"},
    "tether": set(),  # the package's __init__ (its version string)
}
ALGOS_THIRD_PARTY = {"torch"}  # algos is pure maths: torch and the standard library alone


def modules(root: Path) -> dict[str, Path]:
    found = {}
    for path in sorted((root / "tether").rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports(name: str, path: Path) -> list[tuple[str, int]]:
    """(imported module name, line) for every import statement in the file, relative ones resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            out.append((module, node.lineno))
            out += [(f"{module}.{alias.name}", node.lineno) for alias in node.names]
    return out


def edges(root: Path) -> dict[str, dict[str, int]]:
    """module → {tether module it imports: line}."""
    known = modules(root)
    graph: dict[str, dict[str, int]] = {}
    for name, path in known.items():
        graph[name] = {}
        for target, line in imports(name, path):
            while target and target not in known:  # `from tether.x import function` → tether.x
                target = target.rpartition(".")[0]
            if target and target != name and target.startswith("tether"):
                graph[name].setdefault(target, line)
    return graph


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "tether"


def forbidden_edges(graph: dict[str, dict[str, int]]) -> list[str]:
    bad = []
    for source, targets in graph.items():
        for target, line in targets.items():
            a, b = layer(source), layer(target)
            if a != b and b not in ALLOWED.get(a, set()):
                bad.append(f"{source} (line {line}) imports {target}: {a} may not import {b}")
    return bad


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
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

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_points_up_a_layer():
    assert forbidden_edges(edges(SRC)) == []


def test_no_import_cycles():
    assert cycles(edges(SRC)) == []


def test_algos_imports_torch_and_the_standard_library_alone():
    stdlib = set(sys.stdlib_module_names)
    for name, path in modules(SRC).items():
        if layer(name) != "algos":
            continue
        for target, line in imports(name, path):
            top = target.split(".")[0]
            assert top in stdlib or top in ALGOS_THIRD_PARTY or target.startswith("tether.algos") or \
                top == "__future__", f"{name} (line {line}) imports {target}"


def test_every_part_of_the_package_has_a_layer():
    assert {layer(m) for m in modules(SRC)} <= set(ALLOWED)


@pytest.fixture
def package_copy(tmp_path):
    def make(extra: dict[str, str]) -> Path:
        for name, path in modules(SRC).items():
            target = tmp_path / path.relative_to(SRC)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
        for relative, text in extra.items():
            target = tmp_path / relative
            target.write_text(target.read_text(encoding="utf-8") + text, encoding="utf-8")
        return tmp_path
    return make


def test_the_checks_catch_an_upward_import_inside_a_function(package_copy):
    root = package_copy({"tether/eval/metrics.py": "\n\ndef _late():\n    from tether.recipes import quickstart\n"})
    bad = forbidden_edges(edges(root))
    assert bad and all(b.startswith("tether.eval.metrics (line ") and "eval may not import recipes" in b for b in bad)


def test_the_checks_catch_a_cycle(package_copy):
    root = package_copy({"tether/utils/console.py": "\nfrom tether.utils.logging import MetricsLogger\n"})
    found = cycles(edges(root))
    assert len(found) == 1 and {"tether.utils.console", "tether.utils.logging"} <= set(found[0])
