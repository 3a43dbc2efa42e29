"""The packages' public names: each resolves on first use, and the ``TYPE_CHECKING`` block that type checkers and
IDEs read names exactly the lazy exports, from the module that defines them."""

from __future__ import annotations

import ast
import importlib
import inspect
import subprocess
import sys

import pytest

LAZY_PACKAGES = ("rerank_pipeline", "rerank_pipeline.components", "rerank_pipeline.training")


def type_checking_imports(package: str) -> dict[str, str]:
    """``{name: module}`` imported under ``if TYPE_CHECKING:`` in ``package``'s ``__init__``."""
    tree = ast.parse(inspect.getsource(importlib.import_module(package)))
    blocks = [node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"]
    assert len(blocks) == 1, f"{package} has no single `if TYPE_CHECKING:` block"
    imports = [(alias, node.module) for node in ast.walk(blocks[0]) if isinstance(node, ast.ImportFrom) for alias in node.names]
    assert all(alias.asname == alias.name for alias, _ in imports), "re-export as `X as X` (explicit for type checkers)"
    return {alias.name: module for alias, module in imports}


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_type_checking_block_names_the_lazy_exports(package):
    module = importlib.import_module(package)
    seen = type_checking_imports(package)
    assert set(seen) == set(module._EXPORTS)
    assert set(module.__all__) - {"__version__"} == set(module._EXPORTS)
    for name, source in seen.items():
        assert getattr(module, name) is getattr(importlib.import_module(source), name), name


@pytest.mark.parametrize("package", [*LAZY_PACKAGES, "rerank_pipeline.eval"])
def test_every_public_name_resolves(package):
    module = importlib.import_module(package)
    assert module.__all__ and all(getattr(module, name) is not None for name in module.__all__)
    with pytest.raises(AttributeError, match="no attribute 'NoSuchName'"):
        module.NoSuchName  # noqa: B018


@pytest.mark.parametrize(("packages", "allowed"), [
    ("rerank_pipeline, rerank_pipeline.training", set()),
    ("rerank_pipeline.components", {"torch"}),  # haystack itself imports torch
])
def test_importing_a_package_imports_no_model_library(packages, allowed):
    code = (f"import sys, {packages}; print(' '.join(sorted(m for m in "
            "('torch', 'transformers', 'sentence_transformers', 'faiss', 'bm25s') if m in sys.modules)))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert set(loaded) <= allowed
