"""The import-layer contract of docs/architecture.md, checked on the source (AST): every
import of a densemtl module goes to the same or a lower layer, and there is no import cycle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "densemtl"

# bottom to top; a module may import from its own layer's package and from lower layers
LAYERS = [
    {"registry", "fileio"},
    {"tasks"},
    {"losses", "metrics"},
    {"models", "data"},
    {"selfsup", "uda"},
    {"config"},
    {"engine"},
    {"interop", "export", "viz"},
    {"study"},
    {"cli"},
    {"__main__"},
]
LEVEL = {name: i for i, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def is_package(name: str) -> bool:
    return (SRC / Path(*name.split(".")) / "__init__.py").is_file()


def resolve(module: str, node: ast.ImportFrom | ast.Import) -> list[str]:
    """Absolute densemtl module names an import statement loads."""
    out = []
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == PACKAGE]
    if node.level:
        base = module.split(".")
        if not is_package(module):
            base = base[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if target.split(".")[0] != PACKAGE:
        return []
    out.append(target)
    for a in node.names:  # `from pkg import submodule`
        sub = f"{target}.{a.name}"
        if (SRC / Path(*sub.split("."))).with_suffix(".py").is_file() or is_package(sub):
            out.append(sub)
    return out


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        mod = module_name(path)
        edges = graph.setdefault(mod, set())
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges.update(t for t in resolve(mod, node) if t != mod)
    return graph


def layer_of(mod: str) -> tuple[str, int | None]:
    parts = mod.split(".")
    top = parts[1] if len(parts) > 1 else ""
    return top, LEVEL.get(top)


def test_every_module_has_a_layer():
    unknown = sorted({layer_of(m)[0] for m in import_graph() if m != PACKAGE and layer_of(m)[1] is None})
    assert not unknown, f"modules outside the layer table of docs/architecture.md: {unknown}"


def test_imports_go_downwards_only():
    bad = []
    for mod, targets in import_graph().items():
        if mod == PACKAGE:
            continue
        top, level = layer_of(mod)
        for t in targets:
            ttop, tlevel = layer_of(t)
            if t != PACKAGE and ttop != top and tlevel is not None and tlevel >= level:
                bad.append(f"{mod} -> {t} ({top}: layer {level}, {ttop}: layer {tlevel})")
    assert not bad, "imports against the layer order:\n" + "\n".join(sorted(bad))


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(10000, sys.getrecursionlimit()))
    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def _without_own_package_edges(graph):
    """A submodule importing its own package's ``__init__`` (``from . import x`` while the
    package initialises) is not a cycle Python trips on; every other edge counts."""
    return {m: {t for t in ts if not (m.startswith(t + ".") and t.count(".") == m.count(".") - 1)} for m, ts in graph.items()}


def test_no_import_cycles():
    cycles = _cycles(_without_own_package_edges(import_graph()))
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_checker_catches_a_cycle_and_a_layer_violation():
    g = {"densemtl.tasks.a": {"densemtl.losses.b"}, "densemtl.losses.b": {"densemtl.tasks.a"}}
    assert _cycles(g) == [["densemtl.losses.b", "densemtl.tasks.a"]]
    assert layer_of("densemtl.tasks.a")[1] < layer_of("densemtl.losses.b")[1]


@pytest.mark.slow
@pytest.mark.parametrize("package", ["densemtl.tasks", "densemtl.losses", "densemtl.metrics", "densemtl.models",
                                     "densemtl.data", "densemtl.engine.trainer", "densemtl.cli.main"])
def test_each_layer_imports_on_its_own(package):
    """Each package imports first in a fresh interpreter (no reliance on import order), and the
    task layer does not pull in timm or the upper layers."""
    code = (f"import sys, {package}; "
            "print(','.join(sorted(m for m in sys.modules if m == 'timm' or m.startswith('densemtl.'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": str(SRC)})
    assert out.returncode == 0, out.stderr
    if package == "densemtl.tasks":
        loaded = set(out.stdout.strip().split(","))
        assert "timm" not in loaded
        assert all(m.split(".")[1] in ("tasks", "registry") for m in loaded), sorted(loaded)
