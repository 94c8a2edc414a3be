"""Cross-package checks of the workspace layout (run by the `all` nox session)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["utils", "trace", "optimizers", "trainers"]  # lowest first


def test_no_opto_init_in_any_distribution():
    stray = list(ROOT.glob("packages/*/src/opto/__init__.py"))
    assert not stray, f"opto must stay a PEP 420 namespace; remove {stray}"


@pytest.mark.parametrize("name", LAYERS)
def test_every_portion_is_importable_together(name):
    module = importlib.import_module(f"opto.{name}")
    assert Path(module.__file__).is_relative_to(ROOT / "packages" / f"opto-{name}" / "src")


@pytest.mark.parametrize("index", range(len(LAYERS)))
def test_each_distribution_depends_on_its_lower_neighbour_only(index):
    name = LAYERS[index]
    meta = tomllib.loads((ROOT / "packages" / f"opto-{name}" / "pyproject.toml").read_text())
    opto_deps = [d for d in meta["project"]["dependencies"] if d.startswith("opto-")]
    if index == 0:
        assert opto_deps == []
        return
    lower = LAYERS[index - 1]
    (requirement,) = (Requirement(d) for d in opto_deps)
    assert requirement.name == f"opto-{lower}"
    # Released on their own, the siblings stay within one minor series, and the bound
    # admits the sibling in this checkout (whose features this package may use).
    lower_meta = tomllib.loads((ROOT / "packages" / f"opto-{lower}" / "pyproject.toml").read_text())
    assert requirement.specifier.contains(lower_meta["project"]["version"])
    assert not requirement.specifier.contains("0.2.0")


@pytest.mark.parametrize("name", LAYERS)
def test_each_distribution_has_changelog_readme_and_typed_marker(name):
    pkg = ROOT / "packages" / f"opto-{name}"
    assert (pkg / "CHANGELOG.md").is_file()
    assert (pkg / "README.md").is_file()
    assert (pkg / "src" / "opto" / name / "py.typed").is_file()


_THREAD_STARTERS = {"ThreadPoolExecutor", "ProcessPoolExecutor", "Thread", "run_in_executor"}


def test_threads_are_only_started_through_the_context_helpers():
    """Work in a plain thread escapes the caller's usage scopes and budgets: every thread
    and pool must come from `opto.utils.concurrency` (or `asyncio.to_thread`, which copies
    the context)."""
    import ast

    helper = ROOT / "packages" / "opto-utils" / "src" / "opto" / "utils" / "concurrency.py"
    offenders = []
    for path in sorted(ROOT.glob("packages/*/src/**/*.py")):
        if path == helper:
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in _THREAD_STARTERS:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}(...)")
    assert not offenders, (
        "start threads with opto.utils.concurrency (ContextThreadPoolExecutor, start_thread) "
        f"so they keep the caller's context: {offenders}"
    )
