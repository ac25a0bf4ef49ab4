"""Frameworks meet only through enl_core: no package imports another framework.

Read from the source with ``ast`` (nothing is imported, so this runs without
any framework installed): every ``import`` / ``from ... import`` of every
module, at any depth (a function-level import counts as much as a top-level
one). enl_core imports pycocotools only inside functions, so that importing
enl_core never needs the ``coco`` extra.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGES = Path(__file__).resolve().parents[2] / "packages"
TENSORFLOW = {"tensorflow", "tf_keras", "keras", "official"}
TORCH = {"torch", "torchvision"}
# package source folder -> top-level modules its source must never import.
FORBIDDEN = {
    "enl-core/src/enl_core": TENSORFLOW | TORCH | {"enl_keras", "enl_torch"},
    "enl-keras/src/enl_keras": TORCH | {"enl_torch"},
    "enl-torch/src/enl_torch": TENSORFLOW | {"enl_keras"},
}


def imported_modules(tree: ast.AST) -> list[tuple[str, int, bool]]:
    """``(top-level module, line, at module level)`` of every import in ``tree``."""
    found = []

    def visit(node, top_level):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend((alias.name.split(".")[0], child.lineno, top_level)
                             for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                found.append((child.module.split(".")[0], child.lineno, top_level))
            nested = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            visit(child, top_level and not nested)

    visit(tree, True)
    return found


def _modules(folder: str) -> list[Path]:
    return sorted((PACKAGES / folder).rglob("*.py"))


def test_the_scan_sees_every_kind_of_import():
    tree = ast.parse("import torch.nn as nn\nfrom tensorflow import keras\nfrom . import x\n"
                     "def f():\n    import keras\n")
    assert imported_modules(tree) == [("torch", 1, True), ("tensorflow", 2, True),
                                      ("keras", 5, False)]


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_no_package_imports_another_framework(folder):
    modules = _modules(folder)
    assert modules, f"no modules under packages/{folder}"
    offending = [f"{path.relative_to(PACKAGES)}:{line} imports {name}"
                 for path in modules
                 for name, line, _ in imported_modules(ast.parse(path.read_text()))
                 if name in FORBIDDEN[folder]]
    assert not offending, "\n".join(offending)


def test_enl_core_imports_pycocotools_only_when_used():
    offending = [f"{path.relative_to(PACKAGES)}:{line}"
                 for path in _modules("enl-core/src/enl_core")
                 for name, line, top_level in imported_modules(ast.parse(path.read_text()))
                 if name == "pycocotools" and top_level]
    assert not offending, f"module-level pycocotools imports: {offending}"
