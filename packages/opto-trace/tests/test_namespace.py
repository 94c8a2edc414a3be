"""The public namespace of opto.trace: names, laziness, and what is not exported."""

from __future__ import annotations

import ast
import subprocess
import sys

import opto.trace as trace
import pytest


def test_public_names():
    from opto.trace.bundle import bundle
    from opto.trace.containers import NodeContainer
    from opto.trace.errors import ExecutionError
    from opto.trace.modules import Module
    from opto.trace.nodes import GRAPH, Node, node

    assert trace.bundle is bundle  # the decorator, not the submodule
    assert trace.node is node and trace.Node is Node and trace.GRAPH is GRAPH
    assert trace.ExecutionError is ExecutionError
    assert trace.Module is Module and trace.NodeContainer is NodeContainer
    assert callable(trace.model) and callable(trace.apply_op)
    assert hasattr(trace.operators, "add")
    assert hasattr(trace.propagators, "GraphPropagator")
    assert trace.projections.__name__ == "opto.trace.projections"
    assert trace.utils.__name__ == "opto.trace.utils"
    with trace.stop_tracing():
        assert not trace.GRAPH.TRACE
    assert trace.GRAPH.TRACE
    assert set(trace.__all__) <= set(dir(trace))


def test_node_subclasses_are_not_exported_from_the_package():
    for name in ("ParameterNode", "MessageNode", "ExceptionNode", "FunModule", "Seq", "Map"):
        with pytest.raises(AttributeError):
            getattr(trace, name)


def test_bundle_attribute_stays_the_decorator_after_submodule_imports():
    import opto.trace.bundle
    import opto.trace.operators  # noqa: F401

    assert callable(trace.bundle) and trace.bundle.__name__ == "bundle"


def _loaded_by_import(candidates: tuple[str, ...]) -> list[str]:
    """Which of `candidates` a fresh `import opto.trace` loads (not loaded before it)."""
    code = (
        "import sys; before = set(sys.modules); import opto.trace; "
        f"print([m for m in {candidates!r} if m in sys.modules and m not in before])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return ast.literal_eval(out.stdout)


def test_import_loads_no_heavy_or_optional_modules():
    heavy = ("numpy", "graphviz", "litellm", "black", "opto.trace.operators")
    assert _loaded_by_import((*heavy, "opto.trace.propagators", "opto.optimizers")) == []


def test_import_defers_saving_and_exporting_machinery():
    # Module.save/load/export import these when called; `import opto.trace` stays cheap.
    deferred = ("opto.trace.export", "opto.utils.files", "json", "pickle", "tempfile")
    assert _loaded_by_import(deferred) == []


def test_bundle_works_in_python_dash_c_b13():
    code = (
        "from opto.trace import bundle, node\n"
        "@bundle()\n"
        "def f(x):\n"
        "    return x + 1\n"
        "print(f(node(1)).data, bundle()(lambda v: v * 2)(3).data)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "2 6"
