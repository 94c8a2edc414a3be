"""Packages with lazy exports: every public name resolves, is listed by dir(), and is visible
to type checkers (bound at import or in the `if TYPE_CHECKING:` block)."""

from __future__ import annotations

import ast
import importlib
import inspect

import pytest

LAZY_PACKAGES = [
    "opto.utils",
    "opto.utils.llm",
    "opto.trace",
    "opto.optimizers",
    "opto.trainers",
    "opto.trainers.algorithms",
]


def _statically_bound(source: str) -> set[str]:
    """Names a type checker sees in a module: top-level imports/assignments/definitions and
    imports under `if TYPE_CHECKING:`."""
    names: set[str] = set()
    tree = ast.parse(source)
    body = list(tree.body)
    for stmt in tree.body:
        if isinstance(stmt, ast.If) and ast.unparse(stmt.test) == "TYPE_CHECKING":
            body.extend(stmt.body)
    for stmt in body:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in stmt.names)
        elif isinstance(stmt, (ast.FunctionDef, ast.ClassDef)):
            names.add(stmt.name)
        elif isinstance(stmt, ast.Assign):
            for target in stmt.targets:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            names.add(stmt.target.id)
    return names


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_every_public_name_resolves_and_is_listed(package):
    module = importlib.import_module(package)
    assert module.__all__, package
    listed = set(dir(module))
    for name in module.__all__:
        assert name in listed, (package, name)
        assert getattr(module, name) is not None, (package, name)


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_type_checkers_see_every_public_name(package):
    module = importlib.import_module(package)
    bound = _statically_bound(inspect.getsource(module))
    assert sorted(set(module.__all__) - bound) == []
