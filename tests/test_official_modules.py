"""The converter package ``densemtl.interop.official`` keeps one job per module: only source-order
detection uses the data layer and the training engine (``reader`` and ``files`` use the
checkpoint format module only), and every import is at the top of its module."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "densemtl" / "interop" / "official"
DATA_OR_ENGINE_ALLOWED = {"detect.py"}  # modules that may import densemtl.data / densemtl.engine
CHECKPOINT_FORMAT = "engine.checkpoint"  # the checkpoint file format, allowed everywhere


def _imports(tree: ast.Module) -> list[tuple[str, ast.AST]]:
    """(absolute-ish target, node) for each import: relative ``...x.y`` becomes ``x.y``."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level == 3 or mod.startswith("densemtl."):  # from ...data / from densemtl.data
                out.append((mod.removeprefix("densemtl."), node))
        elif isinstance(node, ast.Import):
            out += [(a.name.removeprefix("densemtl."), node) for a in node.names if a.name.startswith("densemtl.")]
    return out


def test_only_detection_imports_data_and_engine():
    bad = []
    for path in sorted(PACKAGE.glob("*.py")):
        for target, _ in _imports(ast.parse(path.read_text())):
            top = target.split(".")[0]
            if top in ("data", "engine") and path.name not in DATA_OR_ENGINE_ALLOWED and target != CHECKPOINT_FORMAT:
                bad.append(f"{path.name} imports densemtl.{target}")
    assert not bad, "\n".join(bad)


def test_imports_are_at_the_top_of_modules():
    bad = []
    for path in sorted(PACKAGE.glob("*.py")):
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                bad += [f"{path.name}:{n.lineno} in {fn.name}" for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert not bad, "function-level imports:\n" + "\n".join(bad)
