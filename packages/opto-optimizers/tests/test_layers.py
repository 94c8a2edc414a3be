"""opto.optimizers is layered: configurations > OptoPrime > strategies and base > pieces >
parsers > helpers (import-linter checks the same contract in the lint session), and the
OptoPrime variants are configurations that override none of OptoPrime's methods."""

from __future__ import annotations

import ast
import inspect
import sys
from pathlib import Path

import opto.optimizers
import pytest
from opto.optimizers import OPRO, CompactOptoPrime, OPROv2, OptoPrime, OptoPrimeMulti, OptoPrimeV2

ROOT = Path(opto.optimizers.__file__).parent
#: Top to bottom; modules of one layer do not import each other (the root pyproject.toml
#: contract "opto.optimizers layers" lists the same).
LAYERS = [
    "optoprimemulti | opro | compact_prompt | textgrad",
    "optoprime_v2",
    "optoprime",
    "candidates",
    "prompts | proposals",
    "optimizer",
    "problem | reply_formats | llm_calls | conversion | code_proposals | buffers | candidate_helpers",
    "prompt_budget | parsing | xml_parsing",
    "utils",
]
LEVEL = {name.strip(): i for i, layer in enumerate(LAYERS) for name in layer.split("|")}


def _imports(path: Path) -> set[str]:
    """opto.optimizers modules a file imports (function level included; TYPE_CHECKING
    blocks never run and are left out)."""
    tree = ast.parse(path.read_text())
    checking = {
        id(inner)
        for stmt in ast.walk(tree)
        if isinstance(stmt, ast.If) and "TYPE_CHECKING" in ast.unparse(stmt.test)
        for inner in ast.walk(stmt)
    }
    found: set[str] = set()
    for stmt in ast.walk(tree):
        if id(stmt) in checking:
            continue
        if isinstance(stmt, ast.ImportFrom) and (stmt.module or "").startswith("opto.optimizers"):
            base = stmt.module.removeprefix("opto.optimizers").lstrip(".")
            if base:
                found.add(base.split(".")[0])
            else:  # from opto.optimizers import prompt_budget
                found.update(a.name for a in stmt.names if (ROOT / f"{a.name}.py").exists())
        elif isinstance(stmt, ast.Import):
            for alias in stmt.names:
                if alias.name.startswith("opto.optimizers."):
                    found.add(alias.name.split(".")[2])
    return found


def test_every_module_is_in_a_layer():
    modules = {p.stem for p in ROOT.glob("*.py")} - {"__init__"}
    assert modules == set(LEVEL), "add new modules to LAYERS and to the pyproject contract"


def test_modules_import_only_lower_layers():
    for path in sorted(ROOT.glob("*.py")):
        if path.stem == "__init__":
            continue
        for imported in _imports(path):
            assert LEVEL[imported] > LEVEL[path.stem], (
                f"opto.optimizers.{path.stem} (layer {LEVEL[path.stem]}) imports "
                f"{imported} (layer {LEVEL[imported]}): only lower layers may be imported"
            )


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib is Python 3.11+")
def test_the_import_linter_contract_lists_the_same_layers():
    import tomllib

    pyproject = Path(__file__).resolve().parents[3] / "pyproject.toml"
    if not pyproject.exists():
        pytest.skip("not in the workspace checkout")
    contracts = tomllib.loads(pyproject.read_text())["tool"]["importlinter"]["contracts"]
    (contract,) = [c for c in contracts if c.get("containers") == ["opto.optimizers"]]
    assert contract["layers"] == LAYERS and contract["exhaustive"]


#: Methods a variant may define besides ``__init__``: OptoPrimeMulti's ``call_llm``
#: returns the texts of one request for several choices (the reference's API).
COMPAT_METHODS = {(OptoPrimeMulti, "call_llm")}


@pytest.mark.parametrize(
    "variant",
    [OptoPrimeV2, OPRO, OPROv2, OptoPrimeMulti, CompactOptoPrime],
    ids=lambda c: c.__name__,
)
def test_variants_configure_optoprime_without_overriding_its_methods(variant):
    for klass in variant.__mro__:
        if klass in (OptoPrime, *OptoPrime.__mro__):
            break
        for name, member in vars(klass).items():
            if name == "__init__" or (klass, name) in COMPAT_METHODS:
                continue
            overridden = getattr(OptoPrime, name, None)
            if overridden is None:
                continue
            assert not (inspect.isfunction(member) or isinstance(member, property)), (
                f"{klass.__name__}.{name} overrides OptoPrime.{name}; configure a strategy "
                "(prompt_builder, reply_format, proposer) instead"
            )
